#!/bin/sh
# parastep @VERSION@, one self-contained file built by `deno task package` (scripts/package.ts).
# This POSIX sh launcher is followed by an xz-compressed tar (@SIZE@ bytes): Deno, ONNX Runtime,
# parastep's sources, the npm packages it imports and the tiny model. On first start it unpacks
# them into ${XDG_CACHE_HOME:-$HOME/.cache}/parastep/@HASH@ (the first 128 bits of the payload's SHA-256), unpacking
# into a temporary folder that is renamed into place, so concurrent first starts are safe; then it
# runs parastep from there. Needs sh, tail, xz and tar; no Deno, Node or network.
set -eu
hash=@HASH@
size=@SIZE@
PATH=${PATH:-/usr/local/bin:/usr/bin:/bin}
export PATH

self=$0
case $self in
*/*) ;;
*) self=$(command -v -- "$self") ;;
esac
if [ -n "${XDG_CACHE_HOME:-}" ]; then
  base=$XDG_CACHE_HOME/parastep
elif [ -n "${HOME:-}" ]; then
  base=$HOME/.cache/parastep
else
  echo "parastep: set HOME or XDG_CACHE_HOME: the package unpacks into a cache folder there" >&2
  exit 1
fi
dir=$base/$hash

if [ ! -f "$dir/.unpacked" ]; then
  for tool in tail xz tar; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      echo "parastep: unpacking the package needs '$tool' (Debian/Ubuntu: apt-get install xz-utils tar)" >&2
      exit 1
    fi
  done
  mkdir -p "$base"
  tmp=$base/.unpack.$(uname -n 2>/dev/null || echo host).$$
  rm -rf "$tmp"
  mkdir "$tmp"
  trap 'rm -rf "$tmp"' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  # A failing tail or xz leaves a mark, as POSIX sh has no pipefail.
  { tail -c "$size" "$self" | xz -dc || : >"$tmp/.failed"; } | tar -xf - -C "$tmp" || : >"$tmp/.failed"
  if [ -e "$tmp/.failed" ] || [ ! -x "$tmp/bin/deno" ]; then
    echo "parastep: cannot unpack $self into $base (damaged file, or disk full?)" >&2
    exit 1
  fi
  : >"$tmp/.unpacked"
  if [ -d "$dir" ] && [ ! -f "$dir/.unpacked" ]; then
    # Not made by this launcher (only whole unpacks are renamed into place): set it aside.
    mv "$dir" "$tmp.stale" && rm -rf "$tmp.stale"
  fi
  if [ ! -d "$dir" ]; then
    mv "$tmp" "$dir" 2>/dev/null || :
  fi
  # Another first start may have renamed its copy into place just before us: then ours was
  # moved inside it, or is still here.
  rm -rf "$tmp" "${dir:?}/${tmp##*/}"
  trap - EXIT INT TERM
  if [ ! -f "$dir/.unpacked" ]; then
    echo "parastep: cannot unpack $self into $dir" >&2
    exit 1
  fi
fi

if [ -z "${PARASTEP_ORT_LIB:-}" ] && [ -z "${PARASTEP_CUDA_PROVIDERS:-}" ]; then
  PARASTEP_ORT_LIB=$dir/lib/libonnxruntime.so.1
  export PARASTEP_ORT_LIB
fi
# The graph cache outlives an upgrade: its entries are keyed by model, ORT build and options.
PARASTEP_CACHE_DIR=${PARASTEP_CACHE_DIR:-$base/ort}
export PARASTEP_CACHE_DIR
DENO_DIR=$dir/deno-dir
DENO_NO_UPDATE_CHECK=1
DENO_NO_PROMPT=1
export DENO_DIR DENO_NO_UPDATE_CHECK DENO_NO_PROMPT
exec "$dir/bin/deno" run --quiet --cached-only --config "$dir/app/deno.json" \
  --allow-ffi --allow-read --allow-write --allow-env --allow-sys --allow-run \
  "$dir/app/main.ts" "$@"
