"""Read benchmark: images/s of the shard reader vs in-memory numpy vs lazy augmentation.

    python bench/read.py [BUILD_DIR] [--batch-size 64] [--epochs 10]

Without BUILD_DIR it writes one to /tmp/frozenaug-bench-build from the shared blood-cell set:
each of 10 frozen epochs is every image (flipped/rotated as a stand-in for augmentation) in
another order, written with the builder's own write_shard. Each pipeline is iterated by the same
training-style loop (touch every batch, no model). Peak RSS is sampled while the reader goes
through all frozen epochs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from builder import format as fmt  # noqa: E402
from builder.atomic import write_json  # noqa: E402
from builder.shards import write_shard  # noqa: E402

PACK_DIR = Path("/work/shared/data/bloodcells")
NPZ = Path("/tmp/bloodcells.npz")
DEFAULT_BUILD = Path("/tmp/frozenaug-bench-build")
CLASSES = ["basophil", "eosinophil", "erythroblast", "immature_granulocyte", "lymphocyte",
           "monocyte", "neutrophil", "platelet"]


def load_source(n_synthetic: int = 12000) -> tuple[np.ndarray, np.ndarray]:
    """The blood-cell images (unpacked once to /tmp), or random ones where the pack is absent
    (a GPU machine without the shared folder): reading speed does not depend on the pixels."""
    if not NPZ.is_file() and (PACK_DIR / "unpack.py").is_file():
        subprocess.run([sys.executable, str(PACK_DIR / "unpack.py"), str(NPZ)], check=True)
    if NPZ.is_file():
        z = np.load(NPZ)
        return z["images"], z["labels"].ravel().astype(np.int32)
    print(f"{NPZ} and {PACK_DIR} not found: using {n_synthetic} random images", file=sys.stderr)
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (n_synthetic, 96, 96, 3), dtype=np.uint8),
            rng.integers(0, len(CLASSES), n_synthetic).astype(np.int32))


def make_bench_build(out: Path, epochs: int = 10, shard_size: int = fmt.DEFAULT_SHARD_SIZE,
                     limit: int | None = None) -> Path:
    """A build directory of ``epochs`` frozen epochs of the source images (reused if present)."""
    if (out / fmt.MANIFEST_NAME).is_file():
        m = fmt.load_manifest(out)
        if m.epochs == epochs:
            return out
    images, labels = load_source()
    if limit:
        images, labels = images[:limit], labels[:limit]
    rng = np.random.default_rng(0)
    entries = []
    for e in range(epochs):
        order = rng.permutation(len(images))
        t = time.perf_counter()
        for i, a in enumerate(range(0, len(images), shard_size)):
            idx = order[a : a + shard_size]
            x = np.rot90(images[idx], k=e % 4, axes=(1, 2))
            x = np.ascontiguousarray(x[:, :, ::-1] if e % 2 else x)
            rel = fmt.shard_relpath("train", i, e)
            entries.append(write_shard(out / rel, x, labels[idx], idx, class_names=CLASSES,
                                       split="train", shard_index=i, epoch=e, relpath=rel))
        print(f"wrote frozen epoch {e} ({time.perf_counter() - t:.1f} s)", file=sys.stderr)
    write_json(out / fmt.MANIFEST_NAME, fmt.make_manifest(
        class_names=CLASSES, image_shape=images.shape[1:], epochs=epochs, seed=0,
        shards=entries))
    return out


class PeakRSS:
    """Sample this process's resident memory in a thread; ``peak`` in bytes."""

    def __init__(self, every: float = 0.02) -> None:
        import psutil

        self._proc, self._every, self.peak = psutil.Process(), every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self._every)

    def __enter__(self) -> PeakRSS:
        self.peak = self._proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def drain(batches: Iterable, limit: int | None = None) -> tuple[int, float]:
    """The training-style loop: touch every batch (one pixel), count images; (images, s)."""
    n, t = 0, time.perf_counter()
    for x, _ in batches:
        _ = x[0, 0, 0, 0].numpy()  # forces the batch to exist, as a train step would
        n += int(x.shape[0])
        if limit and n >= limit:
            break
    return n, time.perf_counter() - t


def in_memory(x: np.ndarray, y: np.ndarray, batch: int, augment: bool = False,
              drop_remainder: bool = False):
    """The usual alternative: the whole set in memory, shuffled by tf.data, optionally
    augmented lazily with Keras layers on every batch."""
    import keras
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x))
    ds = ds.batch(batch, drop_remainder=drop_remainder)
    if augment:
        aug = keras.Sequential([
            keras.layers.RandomFlip("horizontal_and_vertical"),
            keras.layers.RandomRotation(0.25),
            keras.layers.RandomZoom(0.1),
            keras.layers.RandomContrast(0.2),
        ])
        ds = ds.map(lambda a, b: (tf.cast(aug(a, training=True), tf.uint8), b),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.repeat().prefetch(tf.data.AUTOTUNE)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("build", nargs="?", help=f"build directory (default: make {DEFAULT_BUILD})")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=10, help="frozen epochs to read (and build)")
    p.add_argument("--rounds", type=int, default=2, help="repeat reader and in-memory runs")
    p.add_argument("--aug-images", type=int, default=20000, help="images for lazy augmentation")
    args = p.parse_args(argv)

    build = Path(args.build) if args.build else make_bench_build(DEFAULT_BUILD, args.epochs)
    from trainer.stream import ShardStream

    s = ShardStream(build, batch_size=args.batch_size)
    epochs = min(args.epochs, s.epochs)
    import tensorflow as tf  # after the build: TF's own memory is part of the baseline below

    print(f"build {build}: {s.num_samples} images/epoch, {s.epochs} frozen epochs, "
          f"{s.image_shape}, batch {args.batch_size}, tf {tf.__version__}")
    drain(s.dataset(repeat=True), 4 * args.batch_size)  # warm: TF graph, page cache
    # Best of --rounds: other processes share the CPU. All reader rounds come first, so the
    # peak RSS is the reader's alone, not the in-memory set's.
    reader, peak, base = 0.0, 0, 0
    for _ in range(args.rounds):
        with PeakRSS() as rss:
            base = base or rss.peak
            n, dt = drain(s.dataset(repeat=True), epochs * s.num_samples)
        reader, peak = max(reader, n / dt), max(peak, rss.peak)
    print(f"shard reader      {reader:>9,.0f} images/s  ({n:,} images = {epochs} frozen epochs "
          f"per round); peak RSS {peak / 2**30:.2f} GiB "
          f"(+{(peak - base) / 2**30:.2f} over {base / 2**30:.2f} before reading)")

    x = np.concatenate([b[0] for b in s.iter_numpy(0)])
    y = np.concatenate([b[1] for b in s.iter_numpy(0)])
    mem_ds = in_memory(x, y, args.batch_size)
    drain(mem_ds, 4 * args.batch_size)
    memory = max(n / dt for n, dt in (drain(mem_ds, epochs * s.num_samples)
                                      for _ in range(args.rounds)))
    print(f"in-memory numpy   {memory:>9,.0f} images/s  (same count)")
    aug_ds = in_memory(x, y, args.batch_size, augment=True)
    drain(aug_ds, 4 * args.batch_size)
    n, dt = drain(aug_ds, args.aug_images)
    lazy = n / dt
    print(f"lazy augmentation {lazy:>9,.0f} images/s  ({n:,} images)")
    print(f"reader / in-memory {reader / memory:.2f}x   reader / lazy augmentation "
          f"{reader / lazy:.1f}x   (targets: >= 0.9x, >= 30,000 images/s, RSS <= 1.5 GB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
