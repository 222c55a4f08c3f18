#!/bin/sh
# The exporter's pytest suite, in a git-ignored virtual environment (.venv/ at the
# repository root) created on first use from the pinned requirements and refreshed
# whenever requirements.txt changes. torch comes from PyPI with its CUDA wheels
# (about 4 GB; the CPU-only index is not reachable everywhere); the exporter runs on CPU.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
venv=.venv
stamp="$venv/.requirements.sha256"
if [ ! -x "$venv/bin/python" ] || ! sha256sum --check --status "$stamp" 2>/dev/null; then
  echo "Setting up $venv from models/export/requirements.txt (first run: a few minutes)" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r models/export/requirements.txt
  sha256sum models/export/requirements.txt > "$stamp"
fi
exec "$venv/bin/python" -m pytest models/export/tests -q "$@"
