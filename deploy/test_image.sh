#!/usr/bin/env bash
# Builds the serving image (the Dockerfile at the root) with podman and serves predictions from it on this
# machine, as a container runtime would run it:
#   1. a base image: debian:bookworm-slim when a registry is reachable, else one made here with
#      `debootstrap --variant=minbase bookworm` and `podman import` (cached as localhost/distrinews-base);
#   2. `podman build --isolation chroot` (timed), with CHECKPOINT_DIR baked in when given;
#   3. the image's filesystem exported to a temporary root, and the image's own ENTRYPOINT and CMD started
#      in it, as the image's USER, with exactly the image's environment and working directory, as PID 1 of
#      a new PID namespace, in a network namespace of its own, with a read-only root and tmpfs on /tmp and
#      ~/.cache (how deploy/k8s runs it, stricter than a Space);
#   4. checks: PID 1 is deno as uid 1000; GET /health is 200 and the image's HEALTHCHECK command passes;
#      POST /predict answers one of the four AG News topics; SIGTERM drains the server to exit code 0.
# `podman run` is not used because it cannot start containers in this sandbox (setrlimit is refused);
# steps 3-4 are what it would do, by hand.
#
# Usage: sudo deploy/test_image.sh            (root: podman build, namespaces, chroot)
# Environment: CHECKPOINT_DIR (a checkpoint folder in the repository to bake in; default
# checkpoints/minilm_agnews when it exists, which ./setup.sh makes; empty: the Dockerfile's default, a demo
# fine-tune during the build), IMAGE (tag, default localhost/distrinews:test), KEEP_ROOT=1 (keep the
# exported filesystem), BOOT_TIMEOUT (seconds for /health to answer, default 300).
set -euo pipefail
# Errors inside $(...) stop the script too (base=$(base_image) runs a whole function there).
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/distrinews:test}
# The CA bundle this machine trusts, given to the base made here (see base_image); its hash names the cached
# base, so that a changed bundle makes a new one.
HOST_CA=/etc/ssl/certs/ca-certificates.crt
BASE_CACHE=localhost/distrinews-base:bookworm-$( (cat "$HOST_CA" 2>/dev/null || true) | sha256sum | cut -c1-12)
if [[ -z ${CHECKPOINT_DIR+set} && -f checkpoints/minilm_agnews/config.json ]]; then
  CHECKPOINT_DIR=checkpoints/minilm_agnews
fi
CHECKPOINT_DIR=${CHECKPOINT_DIR-}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-300}
LABELS='World|Sports|Business|Sci/Tech'

log() { echo "test_image: $*" >&2; }
fail() {
  log "FAILED: $*"
  exit 1
}

[[ $(id -u) == 0 ]] || fail "run as root (podman build, namespaces and chroot need it)"

# ---- tools
missing=()
for tool in podman jq curl unshare nsenter chroot; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
  log "installing ${missing[*]} with apt"
  apt-get update -qq
  # unshare, nsenter: util-linux; chroot: coreutils (both always there on Debian).
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman jq curl >/dev/null
fi

work=$(mktemp -d /tmp/distrinews-image-test.XXXXXX)
server_pid=""
cleanup() {
  # The server's namespaces (and the mounts made in them) end with its PID 1.
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [[ ${KEEP_ROOT:-0} == 1 ]]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# ---- 1. the base image
base_image() {
  local official=docker.io/library/debian:bookworm-slim
  if podman pull -q "$official" >/dev/null 2>&1; then
    echo "$official"
    return
  fi
  if podman image exists "$BASE_CACHE"; then
    log "no registry: using the debootstrapped base $BASE_CACHE made earlier"
    echo "$BASE_CACHE"
    return
  fi
  log "no registry: making a Debian bookworm base with debootstrap (cached as $BASE_CACHE)"
  command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  local rootfs="$work/base"
  # minbase: essential packages and apt, as the official image. passwd: useradd, which the official
  # slim image has and the Dockerfile uses.
  debootstrap --variant=minbase --include=passwd bookworm "$rootfs" http://deb.debian.org/debian >&2
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* "$rootfs"/tmp/*
  local changes=(--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' --change 'CMD ["bash"]')
  # Where HTTPS goes through a TLS-intercepting proxy (as on our machines), the build's npm, pip and deno
  # must trust what this machine trusts: its bundle goes into this local base, and each tool is pointed at
  # it. An official base image never has this; the Dockerfile knows nothing of it.
  if [[ -s $HOST_CA ]]; then
    mkdir -p "$rootfs/etc/ssl"
    cp "$HOST_CA" "$rootfs/etc/ssl/host-ca-bundle.pem"
    for var in SSL_CERT_FILE NODE_EXTRA_CA_CERTS PIP_CERT DENO_CERT; do
      changes+=(--change "ENV $var=/etc/ssl/host-ca-bundle.pem")
    done
  fi
  tar -C "$rootfs" -c . | podman import "${changes[@]}" - "$BASE_CACHE" >/dev/null
  rm -rf "$rootfs"
  echo "$BASE_CACHE"
}
base=$(base_image)

# ---- 2. build
build_args=(--build-arg "BASE_IMAGE=$base")
[[ -n $CHECKPOINT_DIR ]] && build_args+=(--build-arg "CHECKPOINT_DIR=$CHECKPOINT_DIR")
log "building $IMAGE from $base${CHECKPOINT_DIR:+ with CHECKPOINT_DIR=$CHECKPOINT_DIR}"
started=$SECONDS
# --format docker: the OCI format has no HEALTHCHECK, and podman would drop it.
podman build --isolation chroot --format docker "${build_args[@]}" -t "$IMAGE" . >"$work/build.log" 2>&1 || {
  tail -n 60 "$work/build.log" >&2
  fail "podman build failed (log above)"
}
build_seconds=$((SECONDS - started))

config=$(podman image inspect "$IMAGE" | jq '.[0]')
size_bytes=$(jq -r '.Size' <<<"$config")
log "built in ${build_seconds} s; image size $((size_bytes / 1000000)) MB ($size_bytes bytes); podman images:"
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$IMAGE" >&2

# ---- 3. the image's filesystem, user, environment, command
root="$work/root"
mkdir "$root"
# No health-check timer for a container that only serves to export the filesystem (it needs systemd).
container=$(podman create --no-healthcheck "$IMAGE")
podman export "$container" | tar -x -C "$root"
podman rm "$container" >/dev/null

user=$(jq -r '.Config.User // ""' <<<"$config")
[[ -n $user && $user != root && $user != 0* ]] || fail "the image runs as '${user:-root}', not a non-root user"
uid=${user%%:*}
gid=${user#*:}
[[ $user == *:* ]] || gid=""
# A user name rather than a number: look it up in the image's own passwd.
if [[ ! $uid =~ ^[0-9]+$ ]]; then
  entry=$(grep "^$uid:" "$root/etc/passwd") || fail "user $uid is not in the image's /etc/passwd"
  uid=$(cut -d: -f3 <<<"$entry")
  [[ -n $gid ]] || gid=$(cut -d: -f4 <<<"$entry")
fi
[[ -n $gid ]] || gid=$(awk -F: -v u="$uid" '$3 == u { print $4 }' "$root/etc/passwd")
[[ $uid == 1000 ]] || fail "the image's user has uid $uid, not 1000 (Hugging Face Spaces)"
mapfile -t image_env < <(jq -r '.Config.Env[]' <<<"$config")
mapfile -t command < <(jq -r '(.Config.Entrypoint // []) + (.Config.Cmd // []) | .[]' <<<"$config")
# Not in the JSON of `podman image inspect` (a Docker-format field), but in its template data.
mapfile -t healthcheck < <(podman image inspect --format '{{json .HealthCheck}}' "$IMAGE" | jq -r '.Test // [] | .[]')
workdir=$(jq -r '.Config.WorkingDir // "/"' <<<"$config")
((${#command[@]})) || fail "the image has no ENTRYPOINT or CMD"
[[ ${healthcheck[0]:-} == CMD ]] || fail "the image has no exec-form HEALTHCHECK (got: ${healthcheck[*]:-none})"
home=""
for kv in "${image_env[@]}"; do [[ $kv == HOME=* ]] && home=${kv#HOME=}; done
[[ -n $home ]] || home=$(awk -F: -v u="$uid" '$3 == u { print $6 }' "$root/etc/passwd")
log "user $uid:$gid, workdir $workdir, command: ${command[*]}"

# Runs "$@" inside the image as its user, with its environment, in its working directory (the caller is
# already in the container's mount namespace).
# shellcheck disable=SC2016 # expanded by the image's shell
in_image_cmd=(chroot --userspec="$uid:$gid" --groups="$gid" "$root" /usr/bin/env -i "${image_env[@]}"
  /bin/sh -c 'cd "$0" && exec "$@"' "$workdir")

# The container's namespaces are set up by a shell that ends by exec'ing the image's command, so that
# command is PID 1 of the new PID namespace. Mounts are private to the new mount namespace: nothing is
# left mounted on the host whatever happens.
setup=$(
  cat <<'EOF'
set -eu
root=$1 home=$2 uid=$3 gid=$4
shift 4
ip link set lo up
mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"
mount -t proc proc "$root/proc"
mount -t tmpfs -o mode=0755,size=16m tmpfs "$root/dev"
for node in null zero random urandom; do
  touch "$root/dev/$node"
  mount --bind "/dev/$node" "$root/dev/$node"
done
mkdir "$root/dev/shm"
mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
# The user's writable caches (HF_HOME, DISTRINEWS_CACHE), as the emptyDir of deploy/k8s.
mount -t tmpfs -o "mode=0755,uid=$uid,gid=$gid" tmpfs "$root$home/.cache"
exec "$@"
EOF
)

# ---- 4. run and check
log "starting the image's command in its own namespaces"
unshare --mount --pid --net --fork --propagation private \
  /bin/sh -c "$setup" setup "$root" "$home" "$uid" "$gid" "${in_image_cmd[@]}" "${command[@]}" \
  >"$work/server.log" 2>&1 &
server_pid=$!
# The namespace's PID 1 is unshare's only child.
pid1=""
for _ in $(seq 50); do
  pid1=$(pgrep -P "$server_pid" || true)
  [[ -n $pid1 ]] && break
  sleep 0.1
done
[[ -n $pid1 ]] || fail "the container's first process did not start"
in_ns() { nsenter --target "$pid1" --net "$@"; }

url=http://127.0.0.1:7860
for kv in "${image_env[@]}"; do [[ $kv == PORT=* ]] && url=http://127.0.0.1:${kv#PORT=}; done
log "waiting for $url/health (up to $BOOT_TIMEOUT s)"
boot=$SECONDS
until in_ns curl -fsS -o "$work/health.json" "$url/health" 2>/dev/null; do
  kill -0 "$server_pid" 2>/dev/null || {
    cat "$work/server.log" >&2
    fail "the server exited before answering /health (log above)"
  }
  ((SECONDS - boot < BOOT_TIMEOUT)) || {
    cat "$work/server.log" >&2
    fail "no answer from /health within $BOOT_TIMEOUT s"
  }
  sleep 1
done
log "healthy after $((SECONDS - boot)) s: $(head -c 300 "$work/health.json")"

# PID 1 of the container is the server itself, as the image's user: SIGTERM reaches it directly.
exe=$(readlink "/proc/$pid1/exe")
[[ $(basename "$exe") == deno ]] || fail "PID 1 is $exe, not deno: the entrypoint does not exec the server"
[[ $(awk '/^NSpid:/ { print $NF }' "/proc/$pid1/status") == 1 ]] || fail "the server is not PID 1"
[[ $(awk '/^Uid:/ { print $2 }' "/proc/$pid1/status") == "$uid" ]] || fail "the server does not run as $uid"

# The image's own HEALTHCHECK command, run as the runtime would, inside the container.
nsenter --target "$pid1" --mount --net --pid "${in_image_cmd[@]}" "${healthcheck[@]:1}" ||
  fail "the image's HEALTHCHECK (${healthcheck[*]:1}) failed against a healthy server"
log "HEALTHCHECK passes"

for text in "Champions League: late goal sends holders into the quarter-finals" \
  "Stocks rally as Federal Reserve signals pause in rate hikes"; do
  answer=$(in_ns curl -fsS -X POST "$url/predict" -H 'content-type: application/json' \
    -d "$(jq -n --arg t "$text" '{text: $t}')") || fail "POST /predict failed"
  label=$(jq -r '.label' <<<"$answer")
  [[ $label =~ ^($LABELS)$ ]] || fail "POST /predict answered $answer"
  log "POST /predict: $label ($(jq -r '.confidence' <<<"$answer")) for \"$text\""
done

log "SIGTERM to PID 1"
stopped=$SECONDS
kill -TERM "$pid1"
code=0
wait "$server_pid" || code=$?
server_pid=""
tail -n 5 "$work/server.log" | sed 's/^/  server: /' >&2
((code == 0)) || fail "the server exited with code $code after SIGTERM, not 0"
grep -q "SIGTERM: draining" "$work/server.log" || fail "the server did not log its drain"
log "drained and exited 0 in $((SECONDS - stopped)) s"
log "PASSED: $IMAGE, built in ${build_seconds} s, $((size_bytes / 1000000)) MB"
