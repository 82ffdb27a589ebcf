#!/usr/bin/env bash
# tests/docker/rootfs.sh - a Debian root filesystem with the Pythons this host
# lacks, built once with debootstrap and reused: the source of the e2e base
# image (tests/docker/engine.sh) and of the template tests' Python 3.14 and
# 3.15 (harness/interpreters.py).
#
# Why this exists
# ---------------
# copier.yml offers python_version 3.11 to 3.15, and every choice is tested
# under its own real interpreter, never a downloaded one. Debian packages the
# newest two: forky's python3 is 3.14 and forky also has python3.15. A Debian
# package mirror is all this script needs (no container registry, no
# python.org): it debootstraps a minbase forky with those Pythons, their venv
# modules and ca-certificates, trusting this host's CA bundle, once, into a
# cache directory; later runs find it by its recipe and only print its path.
#
# The host runs those interpreters in place: for each pythonX.Y of the tree,
# usr/host-bin/pythonX.Y starts it through the tree's own dynamic loader with
# the tree's own libraries (glibc included), so it needs nothing from this
# host's (older) C library, and a venv made from it (uv's) works the same way.
# Its processes start this host's programs (git, make, uv) as usual. The
# e2e base image is the same tree without usr/host-bin (engine.sh).
#
# Contract
# --------
# Run it as root (debootstrap and chroot need root; only the first run
# builds). Progress goes to stderr; stdout carries only the tree's path.
# Exit status is non-zero, with a message on stderr, when anything fails.
#
# Options:
#     --rebuild     build the tree again even if the cached one is current
#     -h, --help    show this header
#
# Environment (all optional):
#     DEBIAN_SUITE          Debian release (default forky: python3 is 3.14)
#     DEBIAN_PYTHONS        its Pythons to install beside python3 (default
#                           3.15 for forky, none for another release); each
#                           gets pythonX.Y and pythonX.Y-venv
#     TEMPLATE_ROOTFS_CACHE where trees are kept (default
#                           /var/cache/fastapi-template): one per release,
#                           debian-$DEBIAN_SUITE; harness/interpreters.py
#                           looks there too
#     DEBIAN_MIRROR         mirror for debootstrap (default: the first entry of
#                           apt's own sources for that release, else for this
#                           host's release, else deb.debian.org)
#     SSL_CERT_FILE         CA bundle copied into the tree
#                           (default /etc/ssl/certs/ca-certificates.crt)

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
    echo "tests/docker/rootfs.sh: run it, do not source it" >&2
    return 1
fi

set -Eeuo pipefail

SUITE="${DEBIAN_SUITE:-forky}"
if [[ -v DEBIAN_PYTHONS ]]; then
    PYTHONS="$DEBIAN_PYTHONS"
elif [[ "$SUITE" == forky ]]; then
    PYTHONS=3.15
else
    PYTHONS=""
fi
CACHE="${TEMPLATE_ROOTFS_CACHE:-/var/cache/fastapi-template}"
ROOTFS="$CACHE/debian-$SUITE"
# Bump when the recipe changes: a tree with another recipe is rebuilt.
RECIPE="4 $SUITE python3 $PYTHONS"
STAMP="$ROOTFS/usr/host-bin/recipe"
CA_BUNDLE="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
TREE_CA=/etc/ssl/certs/ca-certificates.crt

rebuild=0
for arg in "$@"; do
    case "$arg" in
        --rebuild) rebuild=1 ;;
        -h|--help) sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0" >&2; exit 0 ;;
        *) echo "rootfs.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

log() { printf 'rootfs.sh: %s\n' "$*" >&2; }
die() { printf 'rootfs.sh: ERROR: %s\n' "$*" >&2; exit 1; }
trap 'die "command failed (line $LINENO): $BASH_COMMAND"' ERR

current() { [[ -r "$STAMP" && "$(cat "$STAMP")" == "$RECIPE" ]]; }

if ((rebuild == 0)) && current; then
    log "Debian $SUITE tree $ROOTFS already present"
    printf '%s\n' "$ROOTFS"
    exit 0
fi

[[ "$(id -u)" == 0 ]] || die "building the Debian $SUITE tree (debootstrap) needs root; run this script as root (or with sudo)"
mkdir -p "$CACHE"

# Only one run at a time builds (parallel test jobs, make -j); the one that
# waited finds the tree built.
exec 8>>"$CACHE/.debian-$SUITE.lock"
flock -w 900 8 || die "timed out waiting for another run of this script"
if ((rebuild == 0)) && current; then
    printf '%s\n' "$ROOTFS"
    exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "debootstrap is missing and apt-get is not found"
    log "installing debootstrap (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -qq update >&2 && apt-get install -y -qq debootstrap >&2 \
        || die "apt-get install debootstrap failed"
fi

# The tree is built beside its final place and moved there when complete.
WORK="$(mktemp -d "$CACHE/.build-$SUITE.XXXXXX")"
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

# Prints the first URI of an entry for suite $1 in apt's own sources.
apt_mirror() {
    local f suite="$1"
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r "$f" ]] || continue
        # deb822: blank-line separated stanzas of "Key: value" fields.
        awk -v suite="$suite" '
            BEGIN { RS = ""; FS = "\n" }
            {
                types = ""; suites = ""; uris = ""; enabled = "yes"
                for (i = 1; i <= NF; i++) {
                    line = $i
                    if (line ~ /^[ \t]*#/) continue
                    key = tolower(line); sub(/:.*/, "", key)
                    val = line; sub(/^[^:]*:[ \t]*/, "", val)
                    if (key == "types") types = val
                    else if (key == "suites") suites = val
                    else if (key == "uris") uris = val
                    else if (key == "enabled") enabled = tolower(val)
                }
                if (enabled == "no" || (" " types " ") !~ / deb /) next
                if ((" " suites " ") !~ (" " suite " ")) next
                split(uris, u, /[ \t]+/)
                if (u[1] != "") { print u[1]; exit }
            }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r "$f" ]] || continue
        # deb [options] URI suite components...
        awk -v suite="$suite" '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite) { print $i; exit }
            }' "$f"
    done
}

# Writes the certificates of $1 that are missing from $2 into directory $3,
# one file each, so that update-ca-certificates in the tree keeps them.
extra_certs() {
    awk -v outdir="$3" '
        /-----BEGIN CERTIFICATE-----/ { inblk = 1; blk = "" }
        inblk { blk = blk $0 "\n"; key = key $0 }
        /-----END CERTIFICATE-----/ {
            inblk = 0
            if (FNR == NR) { known[key] = 1 }
            else if (!(key in known)) {
                n++; f = sprintf("%s/host-ca-%03d.crt", outdir, n)
                printf "%s", blk > f; close(f)
            }
            key = ""
        }' "$2" "$1"
}

[[ -r "$CA_BUNDLE" ]] || die "CA bundle not readable: $CA_BUNDLE (set SSL_CERT_FILE)"
mirror="${DEBIAN_MIRROR:-}"
[[ -n "$mirror" ]] || mirror="$(apt_mirror "$SUITE" | head -n 1)"
# A Debian mirror serves every release: the one this host installs its own from will do.
host_suite="$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")" || true
if [[ -z "$mirror" && -n "$host_suite" ]]; then
    mirror="$(apt_mirror "$host_suite" | head -n 1)"
fi
[[ -n "$mirror" ]] || mirror=http://deb.debian.org/debian
# An older debootstrap has no script for a newer release (bookworm's knows no
# forky): the unstable one (sid) bootstraps every current release.
script=()
if [[ ! -e "/usr/share/debootstrap/scripts/$SUITE" ]]; then
    [[ -e /usr/share/debootstrap/scripts/sid ]] || die "debootstrap knows neither $SUITE nor sid"
    script=(/usr/share/debootstrap/scripts/sid)
fi
packages=python3,python3-venv,ca-certificates
for version in $PYTHONS; do
    packages+=",python$version,python$version-venv"
done
tree="$WORK/rootfs"
mkdir -p "$tree"

log "building the Debian $SUITE tree: debootstrap $SUITE ($packages) from $mirror (a minute or a few)"
started=$SECONDS
if ! debootstrap --variant=minbase --include="$packages" \
        "$SUITE" "$tree" "$mirror" "${script[@]}" >"$WORK/debootstrap.log" 2>&1; then
    tail -n 20 "$WORK/debootstrap.log" >&2
    if [[ -r "$tree/debootstrap/debootstrap.log" ]]; then
        tail -n 20 "$tree/debootstrap/debootstrap.log" >&2
    fi
    die "debootstrap failed (mirror $mirror; override with DEBIAN_MIRROR=...)"
fi

# Trust this host's CAs (e.g. a TLS-intercepting proxy's) inside the tree:
# the extra ones go to /usr/local/share/ca-certificates, so that a later
# update-ca-certificates in a derived image keeps them, and the bundle
# itself is the host's.
mkdir -p "$tree/usr/local/share/ca-certificates"
extra_certs "$CA_BUNDLE" "$tree$TREE_CA" "$tree/usr/local/share/ca-certificates"
chroot "$tree" update-ca-certificates >/dev/null 2>&1 \
    || log "warning: update-ca-certificates failed in the tree; copying the bundle only"
install -m 0644 "$CA_BUNDLE" "$tree$TREE_CA"

# Keep it small, and keep this host's identity out of it (an engine mounts
# its own /etc/hostname, /etc/hosts and /etc/resolv.conf).
rm -rf "$tree"/var/cache/apt/archives/*.deb "$tree"/var/cache/apt/*.bin \
    "$tree"/var/lib/apt/lists/* "$tree"/var/log/*.log "$tree"/var/log/apt/* \
    "$tree"/var/cache/debconf/*-old "$tree"/usr/share/doc/* \
    "$tree"/usr/share/man/* "$tree"/usr/share/info/* "$tree"/tmp/* \
    "$tree"/root/.cache
: >"$tree/etc/resolv.conf"
echo localhost >"$tree/etc/hostname"
[[ -x "$tree/usr/bin/python3" ]] || die "the tree has no /usr/bin/python3"

# The host's entry points: the tree's loader (a real file, not the absolute
# /lib64 link a host would resolve to its own), the tree's libraries first and
# only (--inhibit-cache: never this host's ld.so.cache). Python finds its
# standard library from its argv0, so that is the entry point itself (under
# usr/), whatever link started it, except for a venv's python, which keeps
# its own name to find its pyvenv.cfg (whose home is then this directory).
# They name the tree's final path.
loader="$(cd "$tree" && find usr/lib -maxdepth 2 -name 'ld-linux*.so.*' -type f | head -n 1)"
[[ -n "$loader" ]] || die "no dynamic loader (ld-linux*.so.*) in the tree"
libdir="$(dirname "$loader")"
mkdir -p "$tree/usr/host-bin"
versions=("$(chroot "$tree" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')")
for version in $PYTHONS; do versions+=("$version"); done
for version in "${versions[@]}"; do
    [[ -x "$tree/usr/bin/python$version" ]] || die "the tree has no /usr/bin/python$version"
    cat >"$tree/usr/host-bin/python$version" <<EOF
#!/bin/sh
# Debian $SUITE's python$version, run on this host with $SUITE's loader and libraries.
argv0="$ROOTFS/usr/host-bin/python$version"
if [ -f "\${0%/*}/../pyvenv.cfg" ]; then argv0="\$0"; fi
exec "$ROOTFS/$loader" --inhibit-cache --library-path "$ROOTFS/$libdir:$ROOTFS/usr/lib" \\
    --argv0 "\$argv0" "$ROOTFS/usr/bin/python$version" "\$@"
EOF
    chmod 0755 "$tree/usr/host-bin/python$version"
done

rm -rf --one-file-system "$ROOTFS"
mv "$tree" "$ROOTFS"
# The check runs each entry point from the tree's final path through a link
# elsewhere, as the tests will: the interpreter, its ssl against the CA
# bundle, and a venv's python.
mkdir -p "$WORK/links"
for version in "${versions[@]}"; do
    ln -s "$ROOTFS/usr/host-bin/python$version" "$WORK/links/python$version"
    "$WORK/links/python$version" - "$version" "$WORK/venv-$version" <<'PY' >&2 \
        || die "python$version of the Debian $SUITE tree does not run on this host"
import ssl, subprocess, sys, venv
assert "%d.%d" % sys.version_info[:2] == sys.argv[1], sys.version
ssl.create_default_context()
venv.create(sys.argv[2], with_pip=False)
subprocess.run([sys.argv[2] + "/bin/python", "-c", "import ssl, sqlite3, ctypes"], check=True)
PY
done
printf '%s\n' "$RECIPE" >"$STAMP"
log "built the Debian $SUITE tree (Python ${versions[*]}) in $((SECONDS - started))s: $ROOTFS"
printf '%s\n' "$ROOTFS"
