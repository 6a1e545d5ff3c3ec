#!/usr/bin/env bash
# A stand-in for tensorflow/tensorflow:<version>-gpu on machines that cannot pull from a
# registry: Debian bookworm from Debian's own mirror (mmdebstrap), imported into podman, plus a
# venv with tensorflow-cpu at the version of the Dockerfile's default base. Idempotent: an image
# that already exists is reused, so only the first run downloads anything.
# Prints the stand-in's image name on stdout (everything else goes to stderr).
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
# The host's CA bundle replaces the rootfs's: pip in the build then trusts what the host trusts
# (a site's TLS-intercepting proxy included). Debian's own CAs are in both.
HOST_CA=${HOST_CA:-/etc/ssl/certs/ca-certificates.crt}
# The TensorFlow version is the one the real base ships (tests/test_docker.py keeps that tag
# inside setup.cfg's tensorflow range), so the stand-in tests what the GPU image would run.
TF_VERSION=${TF_VERSION:-$(sed -n 's|^ARG BASE_IMAGE=tensorflow/tensorflow:\([0-9.]*\)-gpu$|\1|p' Dockerfile)}
[ -n "$TF_VERSION" ] || { echo "Dockerfile: no 'ARG BASE_IMAGE=tensorflow/tensorflow:<version>-gpu' line" >&2; exit 2; }
ROOTFS=localhost/frozenaug-standin-rootfs:$SUITE
BASE=localhost/frozenaug-standin:tf$TF_VERSION

for tool in podman mmdebstrap; do
    command -v "$tool" >/dev/null || {
        echo "$0: $tool not found; install it: apt-get install -y podman mmdebstrap" >&2; exit 2; }
done

if ! podman image exists "$ROOTFS"; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    # python3-venv: Debian's python is externally managed (PEP 668), so pip goes into a venv.
    mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        --customize-hook="upload $HOST_CA /etc/ssl/certs/ca-certificates.crt" \
        "$SUITE" "$tmp/rootfs.tar" "$MIRROR" >&2
    podman import --change 'CMD ["/bin/bash"]' "$tmp/rootfs.tar" "$ROOTFS" >&2
fi

if ! podman image exists "$BASE"; then
    podman build --isolation chroot --layers -f docker/standin.Containerfile \
        --build-arg ROOTFS="$ROOTFS" --build-arg TF_VERSION="$TF_VERSION" -t "$BASE" docker >&2
fi
echo "$BASE"
