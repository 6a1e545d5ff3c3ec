"""Training speed of a model on this CPU: wall and CPU milliseconds per image, per setting.

    python bench/trainstep.py [--model small_resnet] [--steps 20] [--rounds 3]
                              [--onednn 1,0]

Each round runs one subprocess per TF_ENABLE_ONEDNN_OPTS value (read when TensorFlow is
imported, so a fresh process each), in turn, so a busy spell on the machine hits every setting
alike. A subprocess builds the model as ``fit`` does (frozenaug.trainer.train.models), trains
one warm-up step, then ``--steps`` steps of batch 64 on random 96x96 images, and reports its
wall and CPU time. Prints the median of the rounds per setting and the ratio to the first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, sys, time
import numpy as np
import keras
from frozenaug.trainer.train.models import build_model
model_name, steps = sys.argv[1], int(sys.argv[2])
m = build_model(model_name, (96, 96, 3), 8, input_norm="image", seed=0)
m.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="categorical_crossentropy")
rng = np.random.default_rng(0)
n = 64 * steps
x = rng.integers(0, 256, (n, 96, 96, 3)).astype(np.float32)
y = keras.utils.to_categorical(rng.integers(0, 8, n), 8)
m.fit(x[:64], y[:64], batch_size=64, epochs=1, verbose=0)  # tracing, first allocations
wall, cpu = time.perf_counter(), time.process_time()
m.fit(x, y, batch_size=64, epochs=1, verbose=0, shuffle=False)
print(json.dumps({"wall_ms": (time.perf_counter() - wall) / n * 1e3,
                  "cpu_ms": (time.process_time() - cpu) / n * 1e3}))
"""


def measure(model: str, steps: int, onednn: str) -> dict:
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn, "TF_CPP_MIN_LOG_LEVEL": "2",
           "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, model, str(steps)], env=env, cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="small_resnet")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--onednn", default="1,0", help="TF_ENABLE_ONEDNN_OPTS values to compare")
    args = ap.parse_args(argv)
    values = args.onednn.split(",")
    runs: dict[str, list[dict]] = {v: [] for v in values}
    for r in range(args.rounds):
        for v in values:
            runs[v].append(measure(args.model, args.steps, v))
            print(f"round {r + 1}, TF_ENABLE_ONEDNN_OPTS={v}: "
                  f"{runs[v][-1]['wall_ms']:.2f} ms/image wall, "
                  f"{runs[v][-1]['cpu_ms']:.2f} CPU", flush=True)
    first = statistics.median(m["wall_ms"] for m in runs[values[0]])
    print(f"\n{args.model}, batch 64, {args.steps} steps, {os.cpu_count()} CPUs, "
          f"median of {args.rounds} rounds:")
    for v in values:
        wall = statistics.median(m["wall_ms"] for m in runs[v])
        cpu = statistics.median(m["cpu_ms"] for m in runs[v])
        spread = max(m["wall_ms"] for m in runs[v]) - min(m["wall_ms"] for m in runs[v])
        print(f"  TF_ENABLE_ONEDNN_OPTS={v}: {wall:.2f} ms/image wall (range {spread:.2f}), "
              f"{cpu:.2f} ms CPU; {wall / first:.2f}x the first")
    return 0


if __name__ == "__main__":
    sys.exit(main())
