#!/usr/bin/env bash
# Usage: ./run_ddp.sh [N] [TRAIN_FLAGS...]
#
# Runs DDP training (train.ts) with N ranks on this machine.
#   N            ranks; default: the number of GPUs (CUDA_VISIBLE_DEVICES's entries, else what `nvidia-smi -L`
#                lists), or 2 CPU ranks (Gloo) without GPUs
#   TRAIN_FLAGS  passed to every rank's train.ts (e.g. --epochs 1)
#
# With `torchrun` on PATH it runs
#   torchrun --standalone --no-python --nproc_per_node N deno run -A train.ts TRAIN_FLAGS
# (--standalone: a free rendezvous port on localhost), else the project's own launcher
#   deno run -A launch.ts --gpus N -- TRAIN_FLAGS
# Both give every rank the same environment (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, ...).
# Environment: DENO (the deno binary, default `deno`), TORCHRUN (default `torchrun`).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
deno="${DENO:-deno}"
torchrun="${TORCHRUN:-torchrun}"

usage() { sed -n '2,15s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

gpu_count() {
  if [[ -n "${CUDA_VISIBLE_DEVICES+set}" ]]; then
    # CUDA sees only these (nvidia-smi would list every GPU); "" hides them all.
    local -a ids
    IFS=',' read -r -a ids <<<"$CUDA_VISIBLE_DEVICES"
    echo "${#ids[@]}"
  elif command -v nvidia-smi >/dev/null 2>&1; then
    # `grep -c` prints 0 (and fails) when nothing matches; nvidia-smi fails without a driver.
    { nvidia-smi -L 2>/dev/null || true; } | grep -c '^GPU ' || true
  else
    echo 0
  fi
}

case "${1:-}" in
  -h | --help)
    usage
    exit 0
    ;;
esac

if [[ "${1:-}" =~ ^[0-9]+$ ]]; then
  n="$1"
  shift
  if ((n < 1)); then
    echo "error: N must be at least 1, got $n" >&2
    usage >&2
    exit 2
  fi
else
  n="$(gpu_count)"
  if ((n == 0)); then n=2; fi
fi

if command -v "$torchrun" >/dev/null 2>&1; then
  exec "$torchrun" --standalone --no-python --nproc_per_node "$n" "$deno" run -A "$here/train.ts" "$@"
else
  exec "$deno" run -A "$here/launch.ts" --gpus "$n" -- "$@"
fi
