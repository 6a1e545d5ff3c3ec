#!/usr/bin/env bash
# `make docker-test`: build the Dockerfile with podman on the stand-in base (standin-base.sh),
# up to its `test` stage, whose RUN step takes the shipped sample through scan -> build ->
# 1-epoch fit -> evaluate as the image's user. Chroot isolation: no container runtime needed.
set -euo pipefail
cd "$(dirname "$0")/.."
base=$(docker/standin-base.sh)
# SMOKE_ID changes every run, so the smoke step reruns even when every layer above is cached.
podman build --isolation chroot --layers --target test \
    --build-arg BASE_IMAGE="$base" --build-arg SMOKE_ID="$(date +%s%N)" \
    -t localhost/frozenaug:test .
# The image a plain `docker build` ships (the last stage: no smoke test), from the cache above.
podman build --isolation chroot --layers --build-arg BASE_IMAGE="$base" \
    -t localhost/frozenaug:standin . >/dev/null
size=$(podman image inspect --format '{{.Size}}' localhost/frozenaug:standin | numfmt --to=iec)
# Layers of earlier sources (a new pip layer per change) are dangling now; only ours go.
podman image prune -f --filter label=org.opencontainers.image.title=frozenaug >/dev/null
echo "docker-test: ok; localhost/frozenaug:standin is $size on $base"
