#!/usr/bin/env bash
# tests/docker/engine.sh - get a Docker engine and a local base image ready
# for the container tests of this template.
#
# Why this exists
# ---------------
# The container tests (image builds, testcontainers) must also run in
# hermetic or air-gapped CI, where no container registry can be reached: every
# `docker pull` fails, so neither `FROM python:3.13-slim` nor the testcontainers
# "Ryuk" reaper image can be used. This script therefore
#   1. installs Debian's Docker engine (docker.io) and debootstrap if dockerd
#      is missing (a Debian package mirror is all it needs, no registry),
#   2. starts dockerd in the background if no engine answers, and checks that
#      bridge networking really works (a published port reached from the host,
#      two containers on a user-defined network reaching each other by name),
#   3. builds the base image locally, once, with `docker import` of the
#      Debian tree that tests/docker/rootfs.sh debootstraps (and caches)
#      instead of pulling it (Debian minbase + python3 + python3-venv
#      + ca-certificates, trusting this host's CA bundle, and forky's
#      python3.15 beside), and reuses it by tag on later runs. The Debian
#      release is the one whose python3 is the template's default
#      python_version (copier.yml): forky, Python 3.14. tests/test_e2e.py
#      checks that the image's python3 is that version.
# It is idempotent: a second run finds the engine and the image and only
# prints the environment.
#
# Contract
# --------
# Run it (do not source it). Progress goes to stderr; stdout carries only
# `export NAME=value` lines, meant for eval:
#
#     env_out="$(bash tests/docker/engine.sh)" && eval "$env_out"
#
# (Written as two steps so that a failure stops the caller: a bare
# `eval "$(...)"` would swallow the exit status. In a Makefile recipe:
#     env_out="$$(bash tests/docker/engine.sh)" && eval "$$env_out" && pytest ...)
#
# Exported on stdout:
#     BASE_IMAGE                     tag of the local base image
#     TESTCONTAINERS_RYUK_DISABLED   true (the reaper image cannot be pulled)
#     DOCKER_HOST                    the engine's address (the caller's value,
#                                    or unix:///var/run/docker.sock)
#     TESTCONTAINERS_HOST_OVERRIDE   127.0.0.1     } only for a local engine
#     TESTCONTAINERS_CONNECTION_MODE docker_host   } (unix socket), see below
# Exit status is non-zero, with a message on stderr, when anything fails.
#
# Options:
#     --self-test   run the networking self-test even if the engine was
#                   already running (it always runs when this script starts it)
#     --rebuild     rebuild the base image even if the tag exists
#     -h, --help    show this header
#
# Environment (all optional):
#     DEBIAN_SUITE          Debian release of the base image (default forky,
#                           whose python3 is 3.14; trixie gives 3.13)
#     BASE_IMAGE            image tag (default fastapi-template-base:$DEBIAN_SUITE)
#     DEBIAN_MIRROR, SSL_CERT_FILE, TEMPLATE_ROOTFS_CACHE
#                           how the tree is built and where it is kept
#                           (tests/docker/rootfs.sh --help)
#     DOCKERD_LOG           dockerd log file (default /var/log/dockerd-tests.log)
#     DOCKERD_EXTRA_ARGS    extra dockerd flags, e.g. "--storage-driver vfs"
#     ENGINE_WAIT_SECONDS   how long to wait for dockerd to answer (default 60)
#
# Engine flags, and what was found to matter
# ------------------------------------------
#   --ip 127.0.0.1   default bind address of published ports: `-p 8000` and
#                    `-p 127.0.0.1::8000` both bind to loopback only, so test
#                    services are never exposed beyond this host.
#   iptables         left ON (dockerd's default). With --iptables=false
#                    dockerd writes no NAT rules: the loopback port proxy
#                    still answers, but containers lose outbound access
#                    (no MASQUERADE), so `pip install` in a `docker build` fails.
#                    Debian's default nf_tables backend of iptables works; if
#                    the kernel has no nf_tables but does have the legacy
#                    tables, this script switches the iptables alternative to
#                    iptables-legacy before starting dockerd.
#   storage driver   left to dockerd's auto-detection: overlay2 on an
#                    ext4/xfs /var/lib/docker. Where overlay2 cannot work
#                    (e.g. /var/lib/docker itself on overlayfs) dockerd falls
#                    back on its own; force it with
#                    DOCKERD_EXTRA_ARGS="--storage-driver vfs" (slow, but works
#                    everywhere).
#   cgroups          dockerd's cgroupfs driver: no systemd is needed.
# Builds work on the default bridge network; `--network host` is not needed.
# Debian's engine has no BuildKit/buildx: builds use the classic builder, so
# Dockerfiles must not use BuildKit-only syntax (`RUN --mount=...`, heredocs,
# or a `# syntax=` line, which would pull a frontend image).
#
# testcontainers: where the test process itself runs in a container-like
# sandbox (a /.dockerenv file exists), testcontainers-python guesses
# "Docker in Docker" and connects to the container network's gateway
# (e.g. 172.17.0.1:<mapped port>), which the loopback-only published ports do
# not answer. For a local engine this script therefore exports
# TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1 and
# TESTCONTAINERS_CONNECTION_MODE=docker_host: mapped ports on 127.0.0.1.
#
# The image sets SSL_CERT_FILE, REQUESTS_CA_BUNDLE and PIP_CERT so that pip,
# requests and httpx inside containers trust the same CAs as this host (this
# matters behind a TLS-intercepting proxy). No proxy variables are baked in;
# pass `--build-arg HTTPS_PROXY=...` yourself if your network needs one.

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
    echo "tests/docker/engine.sh: run it, do not source it:" >&2
    # shellcheck disable=SC2016 # printed literally on purpose
    echo '    env_out="$(bash tests/docker/engine.sh)" && eval "$env_out"' >&2
    return 1
fi

set -Eeuo pipefail

SUITE="${DEBIAN_SUITE:-forky}"
BASE_IMAGE="${BASE_IMAGE:-fastapi-template-base:$SUITE}"
# Bump when the recipe of the base image changes: an image with another
# recipe label is rebuilt instead of reused.
BASE_RECIPE=2
RECIPE_LABEL=org.fastapi-template.base-recipe
HERE="$(cd "$(dirname "$0")" && pwd)"
IMAGE_CA=/etc/ssl/certs/ca-certificates.crt
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd-tests.log}"
ENGINE_WAIT_SECONDS="${ENGINE_WAIT_SECONDS:-60}"
DEFAULT_DOCKER_HOST=unix:///var/run/docker.sock

self_test=0
rebuild=0
for arg in "$@"; do
    case "$arg" in
        --self-test) self_test=1 ;;
        --rebuild) rebuild=1 ;;
        -h|--help) sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0" >&2; exit 0 ;;
        *) echo "engine.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

log() { printf 'engine.sh: %s\n' "$*" >&2; }
die() { printf 'engine.sh: ERROR: %s\n' "$*" >&2; exit 1; }
trap 'die "command failed (line $LINENO): $BASH_COMMAND"' ERR

need_root() {
    [[ "$(id -u)" == 0 ]] || die "$1 needs root; run this script as root (or with sudo)"
}

# Temporary files of this run; removed on exit.
WORK="$(mktemp -d "${TMPDIR:-/var/tmp}/engine-sh.XXXXXX")"
cleanup() {
    local m
    # debootstrap mounts /proc and /sys inside its target while it runs and
    # may leave them mounted when it fails: unmount before deleting.
    if [[ -d "$WORK" ]]; then
        while read -r m; do
            umount -l "$m" 2>/dev/null || true
        done < <(awk -v w="$WORK" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r)
        rm -rf --one-file-system "$WORK"
    fi
}
trap cleanup EXIT

# Only one run at a time sets things up (parallel test jobs, make -j).
LOCK_FILE=/var/lock/fastapi-template-engine.lock
[[ -w "${LOCK_FILE%/*}" ]] || LOCK_FILE="${TMPDIR:-/tmp}/fastapi-template-engine.lock"
exec 9>>"$LOCK_FILE"
flock -w 600 9 || die "timed out waiting for another run of this script ($LOCK_FILE)"

# Runs a command with its output in a log file; on failure prints the tail.
quiet() {
    local what="$1"; shift
    local out="$WORK/cmd.log"
    if ! "$@" >"$out" 2>&1; then
        tail -n 30 "$out" >&2
        die "$what failed: $*"
    fi
}

# ---------------------------------------------------------------------------
# 1. Packages
# ---------------------------------------------------------------------------
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if ((${#missing[@]})); then
    need_root "installing ${missing[*]}"
    command -v apt-get >/dev/null 2>&1 \
        || die "apt-get not found: install ${missing[*]} with this system's package manager"
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    log "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    quiet "apt-get update" apt-get -qq update
    quiet "apt-get install ${missing[*]}" \
        apt-get install -y -qq "${missing[@]}"
fi

# ---------------------------------------------------------------------------
# 2. Engine
# ---------------------------------------------------------------------------
export DOCKER_HOST="${DOCKER_HOST:-$DEFAULT_DOCKER_HOST}"

engine_up() { docker info >/dev/null 2>&1; }

# The interesting end of the dockerd log (its info lines are mostly noise).
# Only this run's part of the log when this script started dockerd.
DOCKERD_LOG_OFFSET=0
dockerd_log_tail() {
    tail -c "+$((DOCKERD_LOG_OFFSET + 1))" "$DOCKERD_LOG" 2>/dev/null \
        | grep -v 'level=info' | tail -n "${1:-20}" >&2 || true
}

start_dockerd() {
    need_root "starting dockerd"
    [[ "$DOCKER_HOST" == "$DEFAULT_DOCKER_HOST" || "$DOCKER_HOST" == unix:///run/docker.sock ]] \
        || die "no engine answers at DOCKER_HOST=$DOCKER_HOST (this script only starts a local one; unset DOCKER_HOST to use it)"

    # iptables backend: dockerd needs a working nat table.
    if command -v iptables >/dev/null 2>&1 && ! iptables -t nat -S >/dev/null 2>&1; then
        if command -v iptables-legacy >/dev/null 2>&1 && iptables-legacy -t nat -S >/dev/null 2>&1; then
            log "iptables (nf_tables) does not work on this kernel; switching to iptables-legacy"
            update-alternatives --set iptables /usr/sbin/iptables-legacy >/dev/null
            update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy >/dev/null 2>&1 || true
        else
            log "warning: 'iptables -t nat -S' fails; dockerd's networking may not start"
        fi
    fi

    if ! touch "$DOCKERD_LOG" 2>/dev/null; then
        DOCKERD_LOG="${TMPDIR:-/tmp}/dockerd-tests.log"
    fi
    DOCKERD_LOG_OFFSET="$(stat -c %s "$DOCKERD_LOG")"
    # A pid file left by an engine that was killed (not shut down) stops
    # dockerd from starting if its pid now belongs to another process.
    local old_pid
    old_pid="$(cat /var/run/docker.pid 2>/dev/null || true)"
    if [[ -n "$old_pid" && "$(cat "/proc/$old_pid/comm" 2>/dev/null || true)" != dockerd ]]; then
        rm -f /var/run/docker.pid
    fi
    local -a args=(--ip 127.0.0.1)
    if [[ -n "${DOCKERD_EXTRA_ARGS:-}" ]]; then
        # shellcheck disable=SC2206 # word splitting is wanted here
        args+=(${DOCKERD_EXTRA_ARGS})
    fi
    log "starting dockerd ${args[*]} (log: $DOCKERD_LOG)"
    {
        echo "----- $(date -u +%FT%TZ) dockerd ${args[*]}"
    } >>"$DOCKERD_LOG"
    # setsid: own session, so that the engine outlives this script and the
    # caller's terminal or job control.
    # 9>&-: the engine must not inherit (and so hold forever) this script's lock.
    setsid dockerd "${args[@]}" </dev/null >>"$DOCKERD_LOG" 2>&1 9>&- &
    local pid=$! waited=0
    while ! engine_up; do
        if ! kill -0 "$pid" 2>/dev/null; then
            dockerd_log_tail 25
            die "dockerd exited during startup (log above, full log: $DOCKERD_LOG)"
        fi
        if ((waited >= ENGINE_WAIT_SECONDS)); then
            dockerd_log_tail 25
            die "dockerd did not answer within ${ENGINE_WAIT_SECONDS}s (log above, full log: $DOCKERD_LOG)"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    log "dockerd is up (pid $pid, ${waited}s)"
    self_test=1
}

if engine_up; then
    log "engine already running at $DOCKER_HOST"
else
    start_dockerd
fi

# ---------------------------------------------------------------------------
# 3. Base image
# ---------------------------------------------------------------------------

image_ok() {
    local recipe
    recipe="$(docker image inspect --format "{{ index .Config.Labels \"$RECIPE_LABEL\" }}" \
        "$BASE_IMAGE" 2>/dev/null)" || return 1
    [[ "$recipe" == "$BASE_RECIPE" ]]
}

build_base_image() {
    # The tree tests/docker/rootfs.sh builds once (and the template tests run
    # its Pythons on this host): imported as it is, without the host's entry
    # points (usr/host-bin).
    local rootfs started=$SECONDS
    rootfs="$(DEBIAN_SUITE="$SUITE" bash "$HERE/rootfs.sh")" || die "the Debian $SUITE tree could not be built (tests/docker/rootfs.sh, above)"
    log "building $BASE_IMAGE from $rootfs"

    local old_id
    old_id="$(docker image inspect --format '{{.Id}}' "$BASE_IMAGE" 2>/dev/null || true)"
    tar --numeric-owner --exclude=./usr/host-bin -C "$rootfs" -cf - . | docker import \
        --change "LABEL $RECIPE_LABEL=$BASE_RECIPE" \
        --change "ENV LANG=C.UTF-8" \
        --change "ENV SSL_CERT_FILE=$IMAGE_CA" \
        --change "ENV REQUESTS_CA_BUNDLE=$IMAGE_CA" \
        --change "ENV PIP_CERT=$IMAGE_CA" \
        --change 'CMD ["python3"]' \
        - "$BASE_IMAGE" >/dev/null
    docker run --rm --network none "$BASE_IMAGE" sh -ec \
        'python3 -m venv /tmp/v && /tmp/v/bin/python -c "import ssl, sys; assert sys.version_info >= (3, 11)"' \
        || die "the new image $BASE_IMAGE failed its check (python3 -m venv)"
    if [[ -n "$old_id" ]]; then  # the image this one replaces, unless in use
        docker image rm "$old_id" >/dev/null 2>&1 || true
    fi
    log "built $BASE_IMAGE in $((SECONDS - started))s"
}

if ((rebuild == 0)) && image_ok; then
    log "base image $BASE_IMAGE already present"
else
    build_base_image
fi

# ---------------------------------------------------------------------------
# 4. Networking self-test (when this script started the engine, or asked)
# ---------------------------------------------------------------------------
host_get() {  # prints the HTTP status of GET $1 from this host, or fails
    if command -v curl >/dev/null 2>&1; then
        curl -fsS -m 3 -o /dev/null -w '%{http_code}' "$1" 2>/dev/null
    else
        python3 - "$1" <<'PY' 2>/dev/null
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=3).status, end="")
PY
    fi
}

network_self_test() {
    local tag="engine-sh-$$" port="" status=""
    local srv="$tag-srv" net="$tag-net"
    # shellcheck disable=SC2317 # called through trap
    st_cleanup() {
        docker rm -f "$srv" "$srv-b" >/dev/null 2>&1 || true
        docker network rm "$net" >/dev/null 2>&1 || true
    }
    trap 'st_cleanup; cleanup' EXIT
    fail() {
        st_cleanup
        if [[ -r "$DOCKERD_LOG" ]]; then dockerd_log_tail 15; fi
        die "networking self-test: $1 (check 'iptables -t nat -S' and the dockerd log $DOCKERD_LOG)"
    }

    # A published port on loopback, reached from this host.
    docker run -d --name "$srv" -p 127.0.0.1::8000 "$BASE_IMAGE" \
        python3 -m http.server 8000 >/dev/null || fail "cannot start a container"
    port="$(docker port "$srv" 8000/tcp | head -n 1)"
    port="${port##*:}"
    [[ -n "$port" ]] || fail "no published port"
    for _ in $(seq 1 20); do
        status="$(host_get "http://127.0.0.1:$port/")" && break
        sleep 0.5
    done
    [[ "$status" == 200 ]] || fail "published port 127.0.0.1:$port did not answer from the host"
    docker rm -f "$srv" >/dev/null

    # Two containers on a user-defined network, by name and by alias.
    docker network create "$net" >/dev/null || fail "cannot create a network"
    docker run -d --name "$srv-b" --network "$net" --network-alias api "$BASE_IMAGE" \
        python3 -m http.server 8000 >/dev/null || fail "cannot start a container on $net"
    docker run --rm --network "$net" "$BASE_IMAGE" python3 -c '
import sys, time, urllib.request
for name in sys.argv[1:]:
    for _ in range(40):
        try:
            urllib.request.urlopen(f"http://{name}:8000/", timeout=2)
            break
        except OSError:
            time.sleep(0.25)
    else:
        sys.exit(f"cannot reach {name}:8000")
' "$srv-b" api >/dev/null || fail "containers on a user-defined network cannot reach each other by name"
    st_cleanup
    trap cleanup EXIT
    log "networking self-test passed (published port on 127.0.0.1, container-to-container by name)"
}

if ((self_test)); then
    network_self_test
fi

# ---------------------------------------------------------------------------
# 5. Environment for the caller (stdout)
# ---------------------------------------------------------------------------
log "ready: BASE_IMAGE=$BASE_IMAGE DOCKER_HOST=$DOCKER_HOST"
printf 'export BASE_IMAGE=%q\n' "$BASE_IMAGE"
printf 'export TESTCONTAINERS_RYUK_DISABLED=true\n'
printf 'export DOCKER_HOST=%q\n' "$DOCKER_HOST"
if [[ "$DOCKER_HOST" == unix://* ]]; then
    printf 'export TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1\n'
    printf 'export TESTCONTAINERS_CONNECTION_MODE=docker_host\n'
fi
