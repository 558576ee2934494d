#!/usr/bin/env bash
# Build the base images the Dockerfiles need from Debian packages alone, and tag them.
#
# For machines that reach no container registry (air-gapped networks, this project's CI):
# every image here comes from Debian's package archive through debootstrap or
# `apt-get download`, then `docker import`, for the machine's own architecture (x86-64 or
# arm64: both tools default to it, and nothing below names one). Images that already exist
# are kept, so this is run once per machine. Each image stands in for a public one users
# normally pull:
#
#   model-serving-base/python:3.11-slim       for python:3.11-slim  (Debian bookworm, python3.11)
#   model-serving-base/rust:trixie            for rust:1-slim-trixie (Debian trixie, rustc-web)
#   model-serving-base/cc:trixie              for gcr.io/distroless/cc-debian13 (glibc, libstdc++, CA certificates)
#
# This machine's CA bundle (CA_BUNDLE) replaces the images' own, and SSL_CERT_FILE and
# PIP_CERT point at it, so builds also work behind a TLS-intercepting proxy whose CA only
# this machine trusts. Images built from the public bases need none of that.
#
# Usage: docker/build-base-images.sh [--print-build-args]
set -euo pipefail

MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
CERT_ENV=(--change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt'
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt')
PYTHON_TAG=model-serving-base/python:3.11-slim
RUST_TAG=model-serving-base/rust:trixie
CC_TAG=model-serving-base/cc:trixie

if [[ ${1:-} == --print-build-args ]]; then
    echo "PYTHON_IMAGE=$PYTHON_TAG RUST_IMAGE=$RUST_TAG RUNTIME_IMAGE=$CC_TAG"
    exit 0
fi

have() { docker image inspect "$1" >/dev/null 2>&1; }
log() { echo "[base-images] $*" >&2; }

command -v debootstrap >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A minimal Debian root file system with extra packages, imported as an image.
debootstrap_image() {
    local tag=$1 suite=$2 packages=$3 cmd=$4
    have "$tag" && { log "$tag exists"; return; }
    log "building $tag from Debian $suite"
    local root="$work/$suite-root"
    debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$MIRROR" >"$work/$suite.log" 2>&1 \
        || { tail -20 "$work/$suite.log" >&2; exit 1; }
    chroot "$root" apt-get clean
    rm -rf "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
    cp "$CA_BUNDLE" "$root/etc/ssl/certs/ca-certificates.crt"
    tar -C "$root" -c . | docker import "${CERT_ENV[@]}" \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change "CMD [\"$cmd\"]" - "$tag" >/dev/null
    rm -rf "$root"
}

# A distroless-style runtime: only the shared libraries a C/C++-linked binary needs, unpacked
# from Debian packages (no shell, no package manager), and the CA bundle.
distroless_cc_image() {
    local tag=$1 suite=$2
    have "$tag" && { log "$tag exists"; return; }
    log "building $tag from Debian $suite packages"
    local root="$work/cc-root" debs="$work/debs" lists="$work/apt"
    mkdir -p "$root" "$debs" "$lists/lists/partial" "$lists/cache/archives/partial"
    local apt=(apt-get -o Dir::State="$lists" -o Dir::Cache="$lists/cache"
        -o Dir::Etc::SourceList="$lists/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o APT::Get::List-Cleanup=0 -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
    echo "deb $MIRROR $suite main" >"$lists/sources.list"
    "${apt[@]}" update -qq
    (cd "$debs" && "${apt[@]}" download -qq libc6 libgcc-s1 libstdc++6 tzdata netbase 2>/dev/null)
    # Merged /usr, as Debian lays it out: the dynamic loader is found through /lib64 on
    # x86-64, through /lib on arm64.
    mkdir -p "$root/usr/lib" "$root/usr/lib64" "$root/usr/bin" "$root/usr/sbin"
    for dir in lib lib64 bin sbin; do ln -s "usr/$dir" "$root/$dir"; done
    for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$root"; done
    # ca-certificates ships the certificates; the bundle is normally built by a postinst.
    mkdir -p "$root/etc/ssl/certs"
    cp "$CA_BUNDLE" "$root/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$root"/usr/share/doc "$root"/usr/share/man "$root"/usr/share/locale "$root"/usr/share/zoneinfo/right
    mkdir -p "$root/tmp" && chmod 1777 "$root/tmp"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
    tar -C "$root" -c . | docker import "${CERT_ENV[@]}" - "$tag" >/dev/null
    rm -rf "$root" "$debs"
}

# Side by side: each spends most of its time waiting on the mirror, or unpacking on one core.
pids=()
debootstrap_image "$PYTHON_TAG" bookworm "python3,python3-venv,ca-certificates" python3 &
pids+=($!)
debootstrap_image "$RUST_TAG" trixie "rustc-web,cargo-web,gcc,libc6-dev,ca-certificates" bash &
pids+=($!)
distroless_cc_image "$CC_TAG" trixie &
pids+=($!)
for pid in "${pids[@]}"; do wait "$pid" || exit 1; done
log "done: $($0 --print-build-args)"
