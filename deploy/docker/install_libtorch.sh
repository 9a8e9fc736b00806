#!/bin/sh
# Builder stage only: a virtualenv at $VENV holding torch's C++ libraries and headers for the shim to compile
# and link against. Nothing in it is imported: torch's Python dependencies (sympy, networkx, ...) and the
# CUDA stack are left out (--no-deps), except the two CUDA libraries that the CUDA wheel's libtorch_cpu.so
# itself links (see below).
#
# Environment: VENV (default /opt/venv), TORCH_VERSION (required), TORCH_INDEX_URL (optional: PyPI when empty;
# https://download.pytorch.org/whl/cpu gives the CPU wheel, a tenth of the download, where it is reachable).
set -eu

venv=${VENV:-/opt/venv}
: "${TORCH_VERSION:?TORCH_VERSION must be set}"

python3 -m venv "$venv"
pip() { "$venv/bin/python" -m pip --disable-pip-version-check --no-cache-dir "$@"; }

if [ -n "${TORCH_INDEX_URL:-}" ]; then
  pip install --no-deps --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION"
else
  pip install --no-deps "torch==$TORCH_VERSION"
fi

# PyPI's Linux wheel is the CUDA build, and even its libtorch_cpu.so has DT_NEEDED entries for the CUDA
# runtime and CUPTI (Kineto, the profiler, is linked in): without them it does not load at all. Install
# exactly those two, at the versions torch pins through its cuda-toolkit requirement. The CPU wheel has
# no such requirement, and then nothing more is installed.
meta=$(ls "$venv"/lib/python3*/site-packages/torch-*.dist-info/METADATA)
pin=$(sed -n 's/^Requires-Dist: cuda-toolkit\[[^]]*\]\(==[^;[:space:]]*\).*/\1/p' "$meta")
if [ -n "$pin" ]; then
  pip install "cuda-toolkit[cudart,cupti]$pin"
fi
echo "install_libtorch: torch $TORCH_VERSION in $venv${pin:+, with the CUDA runtime and CUPTI (cuda-toolkit$pin)}"
