"""What evaluation costs: the distortion suite per family, and TTA / --adapt-bn per prediction.

    python bench/evaltime.py --data /tmp/bloodcells.npz [--n 2600] [--severities 3]
        [--run RUN_DIR | --model simple_cnn]

Without --data it uses random 96x96 images. The model is a finished run's, or an untrained
``--model`` built here (timing does not depend on the weights).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from frozenaug.trainer.assess.distort import FAMILIES, distort  # noqa: E402


def load_images(path: str | None, n: int) -> np.ndarray:
    if path is None:
        return np.random.default_rng(0).integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
    with np.load(path) as d:
        images = d["images"][:n]
    return np.concatenate([images] * -(-n // len(images)))[:n]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="an .npz with 'images'")
    p.add_argument("--n", type=int, default=2600, help="images (the shared set's test split)")
    p.add_argument("--severities", type=int, default=3)
    p.add_argument("--run", default=None, help="a run directory whose model to time")
    p.add_argument("--model", default="simple_cnn", help="else: an untrained model of this name")
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args()
    images = load_images(args.data, args.n)
    print(f"{len(images)} images {images.shape[1:]}, {'real' if args.data else 'random'} data")
    total = 0.0
    for family in FAMILIES:
        t0 = time.perf_counter()
        for s in range(1, args.severities + 1):
            distort(images, family, s, seed=0)
        dt = time.perf_counter() - t0
        total += dt
        print(f"distort {family:<12} {dt:6.2f} s for {args.severities} severities")
    print(f"distortion suite: {total:.1f} s for {len(FAMILIES)} families x {args.severities} "
          f"severities ({len(images) * len(FAMILIES) * args.severities / total:.0f} images/s)")

    from frozenaug.trainer.assess.tta import predict_proba_timed

    if args.run:
        from frozenaug.trainer.assess.evaluate import load_run

        model, name = load_run(args.run).model, args.run
    else:
        from frozenaug.trainer.train.models import build_model

        model, name = build_model(args.model, images.shape[1:], 8, weights="none"), args.model
    predict_proba_timed(model, images[:256], args.batch_size)  # trace once
    cpu = {}
    for kind, flags in (("plain", {}), ("tta", {"tta": True}), ("adapt", {"adapt_bn": True})):
        c0 = time.process_time()
        _, cost = predict_proba_timed(model, images, args.batch_size, **flags)
        cpu[kind] = (time.process_time() - c0, cost)
    plain, tta, adapt = (cpu[k][1] for k in ("plain", "tta", "adapt"))
    print(f"model {name}: plain {plain.total_s:.1f} s; {tta.describe()}; {adapt.describe()} "
          f"(+{adapt.adapt_s / max(plain.total_s, 1e-9):.1f}x a plain pass)")
    # CPU seconds (all threads): the cost ratio without the other users of a shared machine
    base = max(cpu["plain"][0], 1e-9)
    print(f"CPU seconds: plain {cpu['plain'][0]:.1f}, tta {cpu['tta'][0]:.1f} "
          f"({cpu['tta'][0] / base:.1f}x), adapt-bn {cpu['adapt'][0]:.1f} "
          f"({cpu['adapt'][0] / base:.1f}x, prediction included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
