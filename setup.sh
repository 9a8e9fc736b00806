#!/usr/bin/env bash
# One command from a fresh machine (Node.js, npm, python3, g++) to a working DistriNews:
#   1. Deno 2.9.x from npm, unless a 2.9 Deno is already on PATH;
#   2. a project-local Python virtualenv (.venv) with torch (libtorch), transformers and safetensors;
#   3. the native shim, compiled against that libtorch (cached: instant when nothing changed);
#   4. the main job on an embedded default (see setup.ts).
# Idempotent: each step checks first and is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")"

fail() {
  echo "setup: $*" >&2
  exit 1
}

DENO_VERSION=2.9.6
if ! deno --version 2>/dev/null | grep -q "^deno 2\.9\."; then
  command -v npm >/dev/null || fail "npm is needed to install Deno (or install Deno ${DENO_VERSION} yourself)"
  echo "setup: installing Deno ${DENO_VERSION} from npm"
  npm install -g "deno@${DENO_VERSION}" --no-audit --no-fund --loglevel=error ||
    fail "npm could not install deno globally (no write access? try a user prefix: npm config set prefix ~/.local)"
  hash -r
  # npm's global bin folder is not always on PATH (a user prefix, say): use it directly then.
  if ! command -v deno >/dev/null; then export PATH="$(npm prefix -g)/bin:$PATH"; fi
  deno --version >/dev/null 2>&1 || fail "deno was installed but cannot be run; is $(npm prefix -g)/bin on PATH?"
fi

# The venv is up to date when its stamp holds the hash of requirements.txt and the Python version it
# was made with; anything else (a first run, an interrupted install, a new Python) rebuilds it from scratch.
PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null || fail "$PYTHON not found: install Python 3.10+ or set PYTHON"
stamp=.venv/.requirements.sha256
want="$(sha256sum requirements.txt | cut -d' ' -f1) $("$PYTHON" -V 2>&1)"
if [[ ! -x .venv/bin/python || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  echo "setup: creating .venv with $(grep -v '^#' requirements.txt | tr '\n' ' ')(several GB: torch ships CUDA)"
  "$PYTHON" -m venv --clear .venv ||
    fail "could not create a virtualenv; on Debian/Ubuntu install python3-venv (apt-get install python3-venv)"
  .venv/bin/python -m pip --version >/dev/null 2>&1 ||
    fail "the virtualenv has no pip; on Debian/Ubuntu install python3-venv (apt-get install python3-venv)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.txt
  # Written last: an interrupted install leaves no stamp, so the next run starts over.
  echo "$want" > "$stamp"
fi

exec deno run -A setup.ts "$@"
