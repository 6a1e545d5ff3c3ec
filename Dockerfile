# frozenaug on the official TensorFlow GPU image. Build shards once, train many times:
#   docker build -t frozenaug .
#   see README.md, "Docker on GPU servers", for the docker run lines.
# The base is an ARG so that `make docker-test` can build on a stand-in where no registry is
# reachable (docker/standin-base.sh). Its tag must match the TensorFlow pinned in setup.cfg
# (tests/test_docker.py checks it).
ARG BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu
FROM ${BASE_IMAGE} AS runtime
# Also marks make docker-test's superseded build layers, which it prunes.
LABEL org.opencontainers.image.title="frozenaug"

ENV NO_ALBUMENTATIONS_UPDATE=1 \
    HDF5_USE_FILE_LOCKING=FALSE \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/frozenaug
COPY setup.cfg pyproject.toml README.md ./
COPY frozenaug ./frozenaug
COPY builder ./builder
COPY trainer ./trainer
COPY policies ./policies
# Not editable, and without the [cpu]/[gpu] extras: the image's own TensorFlow is used.
# DL3013: this installs the local package, whose dependency ranges live in setup.cfg.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[dask,tensorboard]"

RUN useradd --create-home --uid 1000 frozenaug \
    && mkdir -p /data /shards /runs \
    && chown frozenaug:frozenaug /data /shards /runs
USER 1000:1000
WORKDIR /home/frozenaug
VOLUME ["/data", "/shards", "/runs"]
CMD ["frozenaug-build", "--help"]

# `make docker-test`: the shipped sample through scan -> build -> 1-epoch fit -> evaluate, in the
# image, as its user, on its volumes. One RUN: writes to VOLUME paths do not outlive a RUN step.
# Plain `docker build` builds only the last stage (BuildKit, buildah) and skips this one.
FROM runtime AS test
COPY --chown=1000:1000 data/sample /data/sample
COPY docker/smoke.sh /usr/local/bin/frozenaug-smoke
# A new SMOKE_ID per `make docker-test` reruns the smoke step; the layers above stay cached.
ARG SMOKE_ID=0
RUN echo "smoke run ${SMOKE_ID}" && frozenaug-smoke

FROM runtime
