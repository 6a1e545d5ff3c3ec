"""Per-image augmentation throughput of each policy, one process, mix stage included.

    python bench/augment.py --data /tmp/bloodcells.npz [--n 4000] [--policy light heavy FILE]

Without --data it uses random 96x96 images (fine for timing: no op's cost depends much on
content). Also prints what per-image reseeding costs with ``Compose.set_random_seed`` versus the
Augmenter's shared-generator reset, the reason the Augmenter does the latter.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from frozenaug.builder.augment.augmenter import Augmenter  # noqa: E402
from frozenaug.builder.augment.policy import PRESETS, load_policy  # noqa: E402
from frozenaug.common.seeds import batch_seed, sample_seed  # noqa: E402
from frozenaug.format import DEFAULT_SHARD_SIZE  # noqa: E402


def load_images(path: str | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    if path is None:
        rng = np.random.default_rng(0)
        return (rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8),
                rng.integers(0, 8, n).astype(np.int64))
    with np.load(path) as d:
        images, labels = d["images"][:n], d["labels"][:n].reshape(-1).astype(np.int64)
    reps = -(-n // len(images))  # repeat a small file up to n
    return np.concatenate([images] * reps)[:n], np.concatenate([labels] * reps)[:n]


def bench_policy(name: str, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    aug = Augmenter(load_policy(name))
    num_classes = int(labels.max()) + 1
    aug.augment_batch(images[:200], range(200))  # warm up caches and lazy imports
    n = len(images)
    c0 = time.process_time()
    t0 = time.perf_counter()
    out = np.empty_like(images)
    for i in range(n):
        out[i] = aug.augment(images[i], sample_seed(0, 0, i))
    t1 = time.perf_counter()
    for start in range(0, n, DEFAULT_SHARD_SIZE):
        sl = slice(start, start + DEFAULT_SHARD_SIZE)
        aug.mix(out[sl], labels[sl], num_classes, batch_seed(0, 0, start // DEFAULT_SHARD_SIZE))
    t2 = time.perf_counter()
    # CPU seconds too: on a shared machine wall time also counts other people's work
    return {"per_sample_s": t1 - t0, "mix_s": t2 - t1, "images_per_s": n / (t2 - t0),
            "cpu_us": (time.process_time() - c0) / n * 1e6}


def bench_reseed(name: str, image: np.ndarray, n: int = 500) -> tuple[float, float]:
    """(us per image with set_random_seed, us per image with the Augmenter's reset)."""
    aug = Augmenter(load_policy(name))
    t0 = time.perf_counter()
    for i in range(n):
        aug.transform.set_random_seed(i)
    t1 = time.perf_counter()
    for i in range(n):
        aug._reseed(i)
    t2 = time.perf_counter()
    return (t1 - t0) / n * 1e6, (t2 - t1) / n * 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="an .npz with 'images' and 'labels'")
    p.add_argument("--n", type=int, default=4000, help="images per policy")
    p.add_argument("--policy", nargs="+", default=list(PRESETS), help="presets or files")
    args = p.parse_args()
    images, labels = load_images(args.data, args.n)
    print(f"{len(images)} images {images.shape[1:]}, one process, "
          f"{'real' if args.data else 'random'} data")
    print(f"{'policy':>10} {'images/s':>10} {'us/image':>9} {'cpu us/image':>12} "
          f"{'mix share':>9}")
    for name in args.policy:
        r = bench_policy(name, images, labels)
        total = r["per_sample_s"] + r["mix_s"]
        print(f"{name:>10} {r['images_per_s']:10.0f} {1e6 / r['images_per_s']:9.0f} "
              f"{r['cpu_us']:12.0f} {r['mix_s'] / total:9.1%}")
    for name in ("light", "heavy"):
        slow, fast = bench_reseed(name, images[0])
        print(f"reseed {name}: Compose.set_random_seed {slow:.0f} us/image, "
              f"Augmenter reset {fast:.0f} us/image")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
