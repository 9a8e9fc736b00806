# DistriNews inference server: `deno task serve` (serve.ts) on 0.0.0.0:7860, CPU only, as uid 1000.
# Hugging Face Spaces (Docker SDK) build this file as it is; so do the release workflow and
# deploy/test_image.sh (which also runs the result and asks it for predictions).
#
# Which model the image serves, by build argument (and, for the first, by variable at run time):
#
#   A Space (or any container) serving a fine-tuned model from the Hugging Face Hub:
#       docker build --build-arg DISTRINEWS_CHECKPOINT=owner/name -t distrinews .
#       docker run -p 7860:7860 distrinews
#     On a Space, add a variable DISTRINEWS_CHECKPOINT=owner/name in its settings: Spaces pass variables both
#     as build arguments and as environment variables. Nothing is baked; the server downloads the model into
#     HF_HOME when it starts (for a private or gated model, add a secret HF_TOKEN). Setting
#     DISTRINEWS_CHECKPOINT at run time (docker run -e DISTRINEWS_CHECKPOINT=owner/name) overrides any model
#     the image has.
#
#   An image with the checkpoint inside (no download at start, no Hub needed):
#       docker build --build-arg CHECKPOINT_DIR=checkpoints/minilm_agnews -t distrinews .
#     CHECKPOINT_DIR is a checkpoint folder (Hugging Face layout: config.json, model.safetensors, vocab.txt)
#     inside the build context; it is baked in as checkpoints/distilbert_agnews, the folder serve (and
#     `deno task serve` with no --checkpoint, as deploy/k8s runs it) uses by default.
#
#   Neither: the build fine-tunes ./setup.sh's demo classifier (MiniLM from its PyPI wheel, on the AG News
#   sample in data/ag_news_sample; about 150 s on 2 cores) and bakes that: `docker build .` alone gives an
#   image that answers with real topics.
#
# Other build arguments: BASE_IMAGE (a Debian bookworm; deploy/test_image.sh passes one made with debootstrap
# where no registry is reachable), TORCH_VERSION, TORCH_INDEX_URL (empty: PyPI, whose Linux torch is the CUDA
# wheel; https://download.pytorch.org/whl/cpu downloads a tenth as much where it is reachable; the image is
# the same either way, see deploy/docker/stage_native.sh), DENO_VERSION.
#
# Stages: deno (the Deno binary, from npm), torch (torch's libraries in a venv), builder (the shim, built
# CPU-only, staged with the libraries it loads), app (sources, module cache, the model) and the runtime:
# Debian, Deno, the shim and its libraries, the TypeScript sources and their cache, the model. No Python,
# pip, compiler or CUDA compute libraries.

ARG BASE_IMAGE=debian:bookworm-slim

# ---- deno: the same Deno as ./setup.sh installs, from npm; only its binary leaves this stage.
FROM ${BASE_IMAGE} AS deno
ARG DENO_VERSION=2.9.6
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates nodejs npm \
    && rm -rf /var/lib/apt/lists/*
# npm's postinstall puts the platform's binary at node_modules/deno/deno; the JS wrapper on PATH is not
# needed (and would need node).
RUN npm install -g "deno@${DENO_VERSION}" --no-audit --no-fund --loglevel=error \
    && install -m 0755 "$(npm root -g)/deno/deno" /usr/local/bin/deno.bin \
    && /usr/local/bin/deno.bin --version | grep -q "^deno ${DENO_VERSION} "

# ---- torch: libtorch's headers and libraries (torch's Python side is never imported).
FROM ${BASE_IMAGE} AS torch
ARG TORCH_VERSION=2.11.0
ARG TORCH_INDEX_URL=
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
COPY deploy/docker/install_libtorch.sh /usr/local/bin/
RUN TORCH_VERSION="${TORCH_VERSION}" TORCH_INDEX_URL="${TORCH_INDEX_URL}" install_libtorch.sh

# ---- builder: the shim, CPU-only, and exactly the shared libraries it loads, in /opt/distrinews/lib.
FROM torch AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ patchelf \
    && rm -rf /var/lib/apt/lists/*
COPY --from=deno /usr/local/bin/deno.bin /usr/local/bin/deno
# ffi/build.ts finds libtorch through PYTHON (the venv's torch, located without importing it).
ENV PYTHON=/opt/venv/bin/python \
    DENO_DIR=/opt/deno \
    DENO_NO_UPDATE_CHECK=1
# The app lives at the same path as in the runtime stage: Deno's cache of compiled modules is keyed by path.
WORKDIR /home/user/app
# Only what the build reads, so that editing the server does not rebuild the shim.
COPY deno.json deno.lock ./
COPY util/ util/
COPY ffi/ ffi/
COPY deploy/docker/stage_native.sh /usr/local/bin/
RUN stage_native.sh /opt/distrinews/lib

# ---- app: the sources, every module they import cached, and the model.
FROM builder AS app
# The loader (ffi/lib.ts) takes this library as it is and never rebuilds: the fine-tune below already runs
# on the staged shim, as the server will.
ENV DISTRINEWS_LIB=/opt/distrinews/lib/libdistrinews.so
# What runs in the image: the entry points and the modules they import (tests, benchmarks and the
# deployment manifests stay out; see .dockerignore). A new top-level folder of modules goes here too.
COPY *.ts ./
COPY cli/ cli/
COPY data/ data/
COPY inference/ inference/
COPY launcher/ launcher/
COPY model/ model/
COPY server/ server/
COPY training/ training/
COPY weights/ weights/
COPY deploy/docker/ deploy/docker/
# --frozen: deno.lock must already hold every dependency (no silent upgrade at build time). Then each entry
# point runs once (--help: it loads and compiles its whole module graph, and exits before touching the
# native library), so the cache holds compiled code too and start-up compiles nothing.
RUN deno install --frozen --entrypoint serve.ts predict.ts train.ts launch.ts \
        deploy/docker/healthcheck.ts deploy/docker/prepare_model.ts \
    && for entry in serve.ts predict.ts train.ts launch.ts; do \
        deno run --cached-only -A "$entry" --help >/dev/null || exit 1; \
    done
ARG CHECKPOINT_DIR=deploy/docker/no-checkpoint
ARG DISTRINEWS_CHECKPOINT=
COPY ${CHECKPOINT_DIR} /tmp/baked/
RUN DISTRINEWS_CHECKPOINT="${DISTRINEWS_CHECKPOINT}" \
        deno run --cached-only -A deploy/docker/prepare_model.ts /tmp/baked /opt/checkpoints \
    && rm -rf /tmp/baked ffi/build

# ---- runtime
FROM ${BASE_IMAGE} AS runtime
# Hugging Face Spaces run the container as uid 1000; Kubernetes (deploy/k8s) checks runAsNonRoot against the
# numeric USER below.
RUN groupadd --gid 1000 user \
    && useradd --uid 1000 --gid 1000 --create-home --shell /bin/sh user \
    && mkdir -p /home/user/.cache/huggingface /home/user/.cache/distrinews \
    && chown -R 1000:1000 /home/user/.cache
COPY --from=deno /usr/local/bin/deno.bin /usr/local/bin/deno
COPY --from=builder /opt/distrinews/lib/ /opt/distrinews/lib/
# Code and its cache belong to root and are read-only to the server: it writes only under its home
# (HF_HOME, DISTRINEWS_CACHE) and /tmp, so the image also runs with a read-only root filesystem and
# writable volumes there (deploy/k8s/serving/deployment.yaml).
COPY --from=app /opt/deno/ /opt/deno/
COPY --from=app /home/user/app/ /home/user/app/
COPY --from=app /opt/checkpoints/ /home/user/app/checkpoints/
ARG DISTRINEWS_CHECKPOINT=
# DISTRINEWS_LIB: ffi/lib.ts loads this prebuilt shim instead of looking for ffi/build/<hash> (and building
# one: there is no compiler or libtorch headers here). DENO_DIR: the module cache filled at build time.
ENV HOME=/home/user \
    DENO_DIR=/opt/deno \
    DENO_NO_UPDATE_CHECK=1 \
    DENO_NO_PROMPT=1 \
    DISTRINEWS_LIB=/opt/distrinews/lib/libdistrinews.so \
    HF_HOME=/home/user/.cache/huggingface \
    DISTRINEWS_CACHE=/home/user/.cache/distrinews \
    DISTRINEWS_CHECKPOINT=${DISTRINEWS_CHECKPOINT}
WORKDIR /home/user/app
USER 1000:1000
# The image as the server will see it: the shim loads from the staged libraries (no rebuild), as uid 1000,
# with the module cache read-only.
RUN deno eval 'const { torchVersion } = await import("./ffi/model.ts"); console.log(`libtorch ${await torchVersion()}`);'
EXPOSE 7860
# /health is 200 once the model is loaded, 503 while draining. The start period covers a first start that
# downloads a model from the Hub.
HEALTHCHECK --interval=30s --timeout=10s --start-period=300s --retries=3 \
    CMD ["deno", "run", "--cached-only", "--allow-net=127.0.0.1", "--allow-env=PORT", "deploy/docker/healthcheck.ts"]
# Exec form, and the entrypoint execs deno: the server is PID 1 and gets SIGTERM itself (it drains, then
# exits 0). Arguments after the image name are serve's flags (deno task serve --help).
ENTRYPOINT ["/home/user/app/deploy/docker/entrypoint.sh"]
CMD []
