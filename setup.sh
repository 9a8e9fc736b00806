#!/usr/bin/env bash
# One command from a fresh machine (Node.js, npm, python3, g++) to a working DistriNews:
#   1. Deno 2.9.x from npm, unless a 2.9 Deno is already on PATH;
#   2. a project-local Python virtualenv (.venv) with torch (libtorch), transformers and safetensors;
#   3. the native shim, compiled against that libtorch (cached: instant when nothing changed);
#   4. the main job on an embedded default (see setup.ts).
# Idempotent: each step checks first and is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")"

DENO_VERSION=2.9.6
if ! deno --version 2>/dev/null | grep -q "^deno 2\.9\."; then
  echo "setup: installing Deno ${DENO_VERSION} from npm"
  npm install -g "deno@${DENO_VERSION}" --no-audit --no-fund --loglevel=error
  hash -r
fi

# The venv is up to date when it holds the hash of requirements-dev.txt it was made from.
PYTHON=${PYTHON:-python3}
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements-dev.txt | cut -d' ' -f1)
if [[ ! -x .venv/bin/python || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  echo "setup: creating .venv with $(grep -v '^#' requirements-dev.txt | tr '\n' ' ')(several GB: torch ships CUDA)"
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements-dev.txt
  echo "$want" > "$stamp"
fi

exec deno run -A setup.ts "$@"
