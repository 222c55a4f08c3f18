#!/bin/sh
# Prepares the GPU check for an offline GPU host (docs/gpu-check.md), on the build host, in the
# project root: everything the host lacks, split into the carried folders .gpu/call1..3, each of
# of which fits one device call (64 MiB with the working tree):
#
#   .gpu/call1/parastep          dist/parastep (deno, libonnxruntime, the app, node_modules, tiny model)
#   .gpu/call2/providers.tar.xz  lib/libonnxruntime_providers_{cuda,shared}.so from onnxruntime-gpu
#                                (the CUDA provider with only its sm_90 cubins, bench/gpu/prune_fatbin.ts)
#   .gpu/call3/models.tar.xz     models/audioldm2-bench (python -m models.export audioldm2 --size bench)
#                                (in call2 when both fit; the unpruned provider takes several calls)
#
# Then it prints the three calls. bench/gpu/run.sh, run there in each call, stages what came and
# runs the check once everything is there.
#
# Usage: sh bench/gpu/prepare.sh [--full-provider]
#   --full-provider  carry the CUDA provider unpruned, in xz pieces over more calls (a fallback if the
#                    pruned one does not load on the device)
set -eu
cd "$(dirname "$0")/../.."
full=0
[ "${1:-}" = "--full-provider" ] && full=1
MiB=1048576
LIMIT=$((64 * MiB))
MARGIN=$MiB
deno="npx deno"
XZ="xz -9 -T0"

ort=$(python3 -c 'import json; print(json.load(open("node_modules/onnxruntime-node/package.json"))["version"])') || {
  echo "prepare: run 'npm ci' first (no node_modules/onnxruntime-node)" >&2
  exit 1
}
rm -rf .gpu/call* .gpu/work
mkdir -p .gpu/call1 .gpu/work .cache/gpu

echo "== 1. the package (deno, libonnxruntime $ort, the app, the tiny model)"
$deno task package --out .gpu/call1/parastep --xz-level 9

echo "== 2. the CUDA provider of onnxruntime-gpu $ort"
capi=""
for d in .cache/cuda/venv/lib/python3*/site-packages; do
  if [ -d "$d/onnxruntime_gpu-$ort.dist-info" ]; then capi=$d/onnxruntime/capi; fi
done
if [ -z "$capi" ]; then
  wheel=$(ls .cache/gpu/onnxruntime_gpu-"$ort"-*.whl 2>/dev/null | head -n 1 || :)
  if [ -z "$wheel" ]; then
    python3 -m pip download --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
      --python-version 3.12 -d .cache/gpu "onnxruntime-gpu==$ort"
    wheel=$(ls .cache/gpu/onnxruntime_gpu-"$ort"-*.whl | head -n 1)
  fi
  python3 -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for n in ("libonnxruntime_providers_cuda.so", "libonnxruntime_providers_shared.so"):
    open(sys.argv[2] + "/" + n, "wb").write(z.read("onnxruntime/capi/" + n))' "$wheel" .cache/gpu
  capi=.cache/gpu
fi
mkdir -p .gpu/work/lib
cp "$capi/libonnxruntime_providers_shared.so" .gpu/work/lib/
if [ "$full" = 1 ]; then
  cp "$capi/libonnxruntime_providers_cuda.so" .gpu/work/lib/
else
  $deno run --allow-read --allow-write bench/gpu/prune_fatbin.ts \
    "$capi/libonnxruntime_providers_cuda.so" .gpu/work/lib/libonnxruntime_providers_cuda.so --keep 90
  cuobjdump=$(ls .cache/cuda/venv/lib/python3*/site-packages/nvidia/cu13/bin/cuobjdump 2>/dev/null | head -n 1 || :)
  if [ -n "$cuobjdump" ]; then
    # NVIDIA's own reader must list the pruned file entry for entry as the original.
    "$cuobjdump" --list-elf "$capi/libonnxruntime_providers_cuda.so" | sed 's/^\(ELF file *[0-9]*:\) [^.]*/\1/' >.gpu/work/a
    "$cuobjdump" --list-elf .gpu/work/lib/libonnxruntime_providers_cuda.so | sed 's/^\(ELF file *[0-9]*:\) [^.]*/\1/' >.gpu/work/b
    cmp -s .gpu/work/a .gpu/work/b || { echo "prepare: cuobjdump lists the pruned provider differently" >&2; exit 1; }
    echo "cuobjdump --list-elf: $(wc -l <.gpu/work/a) entries, the same in the pruned file"
  fi
fi
tar --sort=name --owner=0 --group=0 --numeric-owner -C .gpu/work -cf - lib | $XZ -c >.gpu/work/providers.tar.xz

echo "== 3. the bench model"
if [ ! -f .cache/models/audioldm2-bench/manifest.json ]; then
  .venv/bin/python -m models.export audioldm2 --size bench
fi
tar --sort=name --owner=0 --group=0 --numeric-owner -C .cache -cf - models/audioldm2-bench |
  $XZ -c >.gpu/work/models.tar.xz

echo "== 4. into calls"
tree=$(git ls-files -z | xargs -0 du -cb | tail -n 1 | cut -f1)
extra=$(git ls-files -z -o --exclude-standard | xargs -0 -r du -cb | tail -n 1 | cut -f1)
tree=$((tree + ${extra:-0}))
room=$((LIMIT - MARGIN - tree))
psize=$(wc -c <.gpu/work/providers.tar.xz)
msize=$(wc -c <.gpu/work/models.tar.xz)
n=2
if [ $((psize + msize)) -le "$room" ]; then
  mkdir .gpu/call2
  mv .gpu/work/providers.tar.xz .gpu/work/models.tar.xz .gpu/call2/
else
  if [ "$psize" -le "$room" ]; then
    mkdir .gpu/call2
    mv .gpu/work/providers.tar.xz .gpu/call2/
    n=3
  else
    # Pieces that each fill a call; run.sh joins them in name order once all have come.
    split -b "$room" -d -a 1 .gpu/work/providers.tar.xz .gpu/work/providers.tar.xz.part
    pieces=$(ls .gpu/work/providers.tar.xz.part* | wc -l)
    for p in .gpu/work/providers.tar.xz.part*; do
      mkdir ".gpu/call$n"
      mv "$p" ".gpu/call$n/"
      echo "$pieces" >".gpu/call$n/providers.pieces"
      n=$((n + 1))
    done
  fi
  mkdir ".gpu/call$n"
  mv .gpu/work/models.tar.xz ".gpu/call$n/"
fi
rm -rf .gpu/work
calls=$(ls -d .gpu/call* | sort -V)
printf 'working tree: %s MiB; limit per call: 64 MiB\n' "$((tree / MiB))"
for c in $calls; do
  bytes=$(du -cb "$c" | tail -n 1 | cut -f1)
  total=$((bytes + tree))
  printf '%s: %s MiB carried, %s MiB with the tree\n' "$c" "$((bytes / MiB))" "$((total / MiB))"
  ls -l "$c" | tail -n +2 | sed 's/^/    /'
  if [ "$total" -gt "$LIMIT" ]; then
    echo "prepare: $c is over the 64 MiB a call carries" >&2
    exit 1
  fi
done
echo
echo "Now, on a warm GPU machine, one call after the other (each within its 30 s idle window):"
for c in $calls; do
  echo "  run(carry=[\"$c\"], command=\"sh bench/gpu/run.sh\", timeout_s=540)"
done
