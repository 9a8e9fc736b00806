#!/bin/sh
# Builder stage only: builds the shim CPU-only against the builder's torch and puts it, with exactly the
# shared libraries it loads from that torch, into $1 (default /opt/distrinews/lib), a folder the runtime
# stage copies as is and points DISTRINEWS_LIB at.
#
# The shim is built as every user builds it (`deno task build`; PYTHON names the venv whose torch ffi/build.ts
# finds). Then the staged copy is changed in two ways, both checked at the end:
#   - its DT_NEEDED entry for libtorch.so goes: the shim uses no symbol of it (libtorch.so only ties the other
#     libraries together), and in the CUDA wheel libtorch.so needs libtorch_cuda.so and so the whole CUDA
#     stack (gigabytes), which a CPU image must not carry;
#   - its RUNPATH becomes $ORIGIN: the libraries lie beside it (torch's own libraries find each other through
#     $ORIGIN in their RPATH already).
# Which libraries to copy is asked of the dynamic loader (ldd), not listed by hand: whatever it resolves
# inside the venv comes along; the system's (libstdc++, libc) come from the runtime's Debian, the same
# release as the builder's.
set -eu

out=${1:-/opt/distrinews/lib}

built=$(DISTRINEWS_CUDA=0 deno task build | sed -n 's/^\(built\|up to date\): //p')
[ -f "$built" ] || { echo "stage_native: deno task build named no library" >&2; exit 1; }

mkdir -p "$out"
probe="$out/libdistrinews.so"
cp "$built" "$probe"
patchelf --remove-needed libtorch.so "$probe"
# Still with the build's RUNPATH (the venv): ldd shows where each library comes from.
ldd "$probe" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | while read -r lib; do
  case "$lib" in
    */site-packages/*) cp -L "$lib" "$out/" ;;
  esac
done
# shellcheck disable=SC2016 # $ORIGIN is for the dynamic loader, not the shell
patchelf --set-rpath '$ORIGIN' "$probe"

# The check: the staged folder alone satisfies the shim (every library found, every symbol bound), and
# nothing of CUDA's compute stack slipped in.
report=$(ldd -r "$probe" 2>&1)
echo "$report"
if echo "$report" | grep -E "not found|undefined symbol" >/dev/null; then
  echo "stage_native: the staged shim does not load from $out alone (see above)" >&2
  exit 1
fi
for lib in "$out"/*; do
  case "${lib##*/}" in
    *torch_cuda* | *cublas* | *cudnn* | *nccl* | *nvshmem* | *cusparse* | *cufft* | *curand* | *cusolver*)
      echo "stage_native: a CUDA compute library was staged: $lib" >&2
      exit 1
      ;;
  esac
done
du -sh "$out"/*
