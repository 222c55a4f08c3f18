#!/bin/sh
# The GPU check on an offline GPU host (docs/gpu-check.md), run in the project root in every call
# that bench/gpu/prepare.sh planned: it stages what this call carried (.gpu/call*/) into
# .gpu/stage/, which stays on the host while it is warm, and once everything is there:
#
#   1. points the CUDA setup at the host's CUDA 13 libraries (torch's site-packages/nvidia) and the
#      carried providers (scripts/setup_cuda.ts --providers-from --cuda-libs --dir),
#   2. runs `parastep info` (CUDA runtime, driver, devices),
#   3. runs `deno task gpu-check` on the tiny model and on the bench model (per-call latency on
#      CUDA and CPU, sequential and ParaStep N = 2 on the one GPU, agreement with the CPU's output),
#   4. prints one table (bench/gpu/summary.ts); logs and JSON go to $OUT when it is set.
#
# Runs on a machine without a GPU as well (CUDA is then reported missing and only the CPU is
# measured), which is how it is tested. Environment: OUT (where results go), GPU_CHECK_RUNS (3),
# PARASTEP_CUDA_LIBS (the folder holding the CUDA libraries; default: torch's site-packages/nvidia).
set -eu
cd "$(dirname "$0")/../.."
S=$PWD/.gpu/stage
mkdir -p "$S"
out=${OUT:-$S/out}
mkdir -p "$out"
runs=${GPU_CHECK_RUNS:-3}

# Runs "$@" with its output both shown and saved in $1; returns its exit status (POSIX sh has no
# pipefail, so the status goes through a file).
logged() {
  log=$1
  shift
  { "$@" 2>&1; echo $? >"$S/.rc"; } | tee "$log"
  return "$(cat "$S/.rc")"
}

# Python unpacks (it is on every such host; xz may not be).
untar() {
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$1" "$2"
}

# 1. Stage what came.
if [ -f .gpu/call1/parastep ] && [ ! -f "$S/.package" ]; then
  # The package unpacks itself into $S/home/.cache/parastep/<hash> and must run here.
  HOME=$S/home sh .gpu/call1/parastep --version
  ls -d "$S"/home/.cache/parastep/*/ | head -n 1 >"$S/.package"
  echo "staged the package"
fi
for pieces in .gpu/call*/providers.pieces; do
  [ -f "$pieces" ] || continue
  mkdir -p "$S/pieces"
  cp .gpu/call*/providers.tar.xz.part* "$S/pieces/" 2>/dev/null || :
  if [ "$(ls "$S"/pieces/providers.tar.xz.part* | wc -l)" -eq "$(cat "$pieces")" ]; then
    cat "$S"/pieces/providers.tar.xz.part* >"$S/providers.tar.xz"
    rm -rf "$S/pieces"
  fi
  break
done
for f in .gpu/call*/providers.tar.xz "$S/providers.tar.xz"; do
  if [ -f "$f" ] && [ ! -f "$S/providers/lib/libonnxruntime_providers_cuda.so" ]; then
    untar "$f" "$S/providers"
    echo "staged the CUDA provider"
  fi
done
for f in .gpu/call*/models.tar.xz; do
  if [ -f "$f" ] && [ ! -f "$S/models/audioldm2-bench/manifest.json" ]; then
    untar "$f" "$S"
    echo "staged the bench model"
  fi
done

missing=""
[ -f "$S/.package" ] || missing="$missing package(call1)"
[ -f "$S/providers/lib/libonnxruntime_providers_cuda.so" ] || missing="$missing providers"
[ -f "$S/models/audioldm2-bench/manifest.json" ] || missing="$missing bench-model"
if [ -n "$missing" ]; then
  echo "still to come:$missing (run the next call)"
  exit 0
fi

pkg=$(cat "$S/.package")
pkg=${pkg%/}
deno=$pkg/bin/deno
# `deno task` resolves the npm imports from node_modules (git-ignored, so never carried).
[ -e node_modules ] || ln -s "$pkg/app/node_modules" node_modules
export DENO_DIR=$S/deno-dir DENO_NO_UPDATE_CHECK=1
unset PARASTEP_ORT_LIB PARASTEP_CUDA_PROVIDERS

status=0

# 2. CUDA from the host's libraries.
nvidia=${PARASTEP_CUDA_LIBS:-$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(os.path.dirname(torch.__file__)), "nvidia"))' 2>/dev/null || :)}
if [ -z "$nvidia" ] || [ ! -d "$nvidia" ]; then
  echo "no CUDA libraries found (torch's site-packages/nvidia); set PARASTEP_CUDA_LIBS" >&2
  exit 1
fi
logged "$out/setup.log" env PARASTEP_ORT_LIB="$pkg/lib/libonnxruntime.so.1" "$deno" run -A \
  scripts/setup_cuda.ts --providers-from "$S/providers/lib" --cuda-libs "$nvidia" --dir "$S/ort" ||
  status=1
export PARASTEP_CUDA_PROVIDERS=$S/ort

# 3. The checks (each bounded, so one hang leaves time for the rest and the table).
# $OUT brings back at most 8 files: setup.log, info.txt, two gpu-check.{json,log}, summary.md.
logged "$out/info.txt" "$deno" task info || status=1
for model in audioldm2-tiny "$S/models/audioldm2-bench"; do
  name=$(basename "$model")
  mkdir -p "$out/$name"
  logged "$S/$name.txt" env OUT="$out/$name" timeout 240 \
    "$deno" task gpu-check --model "$model" --runs "$runs" || status=1
done

# 4. One table.
"$deno" run --allow-read --allow-write bench/gpu/summary.ts \
  "tiny=$out/audioldm2-tiny/gpu-check.json" "bench=$out/audioldm2-bench/gpu-check.json" |
  tee "$out/summary.md"
exit "$status"
