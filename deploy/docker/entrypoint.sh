#!/bin/sh
# The image's ENTRYPOINT: the inference server (serve.ts), listening on 0.0.0.0 and on $PORT (serve's own
# default without it: 7860, the Hugging Face Spaces port).
#
# `exec`: deno replaces this shell and becomes PID 1, so the SIGTERM of `docker stop`, Kubernetes or a Space
# reaches the server itself and starts its drain (a shell left as PID 1 would ignore it, and the container
# would be killed after the grace period, cutting the requests in flight).
#
# The model: $DISTRINEWS_CHECKPOINT when set (a Hugging Face model id, or a folder), else the checkpoint
# baked into the image (checkpoints/distilbert_agnews, serve's default). Arguments given to the container
# come after these defaults, and a flag given twice takes its last value: `--checkpoint X` or
# `--host ::` on the command line win.
#
# --cached-only: every module was cached when the image was built; start-up never downloads code.
set -eu
if [ -n "${DISTRINEWS_CHECKPOINT:-}" ]; then
  set -- --checkpoint "$DISTRINEWS_CHECKPOINT" "$@"
fi
exec deno run --cached-only -A serve.ts --host 0.0.0.0 "$@"
