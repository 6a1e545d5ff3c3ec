#!/bin/sh
# The image's smoke test (Dockerfile stage `test`, run by `make docker-test`): the shipped sample
# through the whole pipeline, as the image's user, reading /data and writing /shards and /runs.
set -eu
[ "$(id -u)" = 1000 ] || { echo "smoke: running as uid $(id -u), not the image's uid 1000" >&2; exit 1; }
set -x
frozenaug-build scan /data/sample --out /runs/scan
frozenaug-build build /data/sample --out /shards/sample --epochs 1 --policy heavy --seed 0
frozenaug-build verify /shards/sample   # and its finishing build, /shards/sample/finish
# the recipe, shortened: a heavy epoch, then one on the finishing build
frozenaug-train fit /shards/sample --model small_resnet --weights none \
    --epochs-coarse 1 --epochs-fine 1 --batch-size 32 --out /runs/sample
frozenaug-train evaluate /runs/sample --out /runs/sample/eval
# fit saved its model, and evaluate scored every test image of the build exactly once.
python3 - <<'PY'
import json
import pathlib

manifest = json.loads(pathlib.Path("/shards/sample/manifest.json").read_text())
metrics = json.loads(pathlib.Path("/runs/sample/eval/metrics.json").read_text())
tests = sum(s["samples"] for s in manifest["shards"] if s["split"] == "test")
scored = sum(map(sum, metrics["confusion_matrix"]))
assert pathlib.Path("/runs/sample/model.keras").is_file(), "fit saved no model.keras"
run = json.loads(pathlib.Path("/runs/sample/run.json").read_text())
assert run["fine_build"].endswith("/sample/finish"), run["fine_build"]
assert scored == tests > 0, f"evaluate scored {scored} images, the build has {tests} test images"
print(f"smoke: ok, {scored} test images, accuracy {metrics['accuracy']:.3f}")
PY
