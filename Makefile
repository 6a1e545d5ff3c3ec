# The two commands the README starts with: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= out/demo
SAMPLE ?= data/sample
STAMP  := $(VENV)/.installed

export NO_ALBUMENTATIONS_UPDATE := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup demo test lint clean docker-test

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[cpu,dev,dask]'
	touch $@

# The main job on the shipped sample: scan -> build shards -> train small_resnet from scratch
# -> evaluate. The light policy: on 770 training images heavy needs far more epochs than a
# demo affords (30 epochs: 0.65 test accuracy; light, 40: 0.95, 2 min on 2 cores after setup).
# bench/quality.py measures heavy on the full set.
demo: $(STAMP)
	$(BIN)/frozenaug-build scan $(SAMPLE) --out $(OUT)/scan
	$(BIN)/frozenaug-build build $(SAMPLE) --out $(OUT)/shards --epochs 5 --policy light --seed 0 \
		--overwrite
	$(BIN)/frozenaug-build preview $(OUT)/shards --out $(OUT)/shards/preview.png
	$(BIN)/frozenaug-train fit $(OUT)/shards --model small_resnet --weights none \
		--epochs-coarse 40 --batch-size 32 --out $(OUT)/run --overwrite
	$(BIN)/frozenaug-train evaluate $(OUT)/run $(OUT)/shards --distort --out $(OUT)/eval
	@echo
	@echo "Done. Removed outliers: $(OUT)/scan/scan.png; augmentation samples: $(OUT)/shards/preview.png;"
	@echo "training curves: $(OUT)/run/curves.png; metrics: $(OUT)/eval/metrics.json and $(OUT)/eval/confusion.png"

test: $(STAMP) lint
	$(BIN)/pytest -q --durations=15

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python tests/importcontract.py
	$(BIN)/hadolint Dockerfile

# ~5 min cold, ~1 min cached; CI runs it after make test (README, "Docker on GPU servers"): the
# Dockerfile built with podman on a stand-in base and the sample run through it inside the
# build. Needs podman and mmdebstrap (Debian; .ci/run installs them).
docker-test:
	docker/test.sh

clean:
	rm -rf out .pytest_cache .ruff_cache
