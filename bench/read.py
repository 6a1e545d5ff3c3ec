"""Read benchmark: images/s of the shard reader vs in-memory numpy vs lazy augmentation.

    python bench/read.py [BUILD_DIR] [--batch-size 64] [--epochs 10] [--encode jpeg:95]

Without BUILD_DIR it writes one to /tmp/frozenaug-bench-build from the shared blood-cell set:
each of 10 frozen epochs is every image (flipped/rotated as a stand-in for augmentation) in
another order, written with the builder's own write_shard. Each pipeline is iterated by the same
training-style loop (touch every batch, no model); rounds alternate between the reader and the
in-memory pipeline and the best of each counts, with CPU time per image beside the rate. Peak RSS
is sampled while the reader goes through all frozen epochs the first time.
"""

from __future__ import annotations

import argparse
import math
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

from frozenaug import format as fmt  # noqa: E402
from frozenaug.builder.write.shards import write_shard  # noqa: E402
from frozenaug.common.atomic import write_json  # noqa: E402

PACK_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "bloodcells"  # ../shared
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
                     limit: int | None = None, encoding: str = fmt.RAW) -> Path:
    """A build directory of ``epochs`` frozen epochs of the source images, stored ``encoding``
    (reused if present)."""
    if (out / fmt.MANIFEST_NAME).is_file():
        m = fmt.load_manifest(out)
        if m.epochs == epochs and m.encoding == encoding:
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
                                       split="train", shard_index=i, epoch=e, relpath=rel,
                                       encoding=encoding))
        print(f"wrote frozen epoch {e} ({time.perf_counter() - t:.1f} s)", file=sys.stderr)
    write_json(out / fmt.MANIFEST_NAME, fmt.make_manifest(
        class_names=CLASSES, image_shape=images.shape[1:], epochs=epochs, seed=0,
        shards=entries, encoding=encoding))
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


def busy_seconds() -> float | None:
    """CPU seconds the whole machine has been busy (Linux /proc/stat; stolen time counts as
    busy), or None where that is not known."""
    try:
        with open("/proc/stat") as f:
            v = [int(t) for t in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def timed(batches: Iterable, limit: int) -> tuple[float, float, float]:
    """(images/s, CPU microseconds per image over all threads of this process, CPU cores other
    processes kept busy meanwhile (nan if unknown)) of a drain. The CPU per image depends
    less on other processes than the rate does."""
    busy, cpu = busy_seconds(), time.process_time()
    n, dt = drain(batches, limit)
    cpu = time.process_time() - cpu
    after = busy_seconds()
    others = math.nan if busy is None or after is None else max(0.0, after - busy - cpu) / dt
    return n / dt, cpu / n * 1e6, others


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
    p.add_argument("--rounds", type=int, default=3, help="repeat reader and in-memory runs")
    p.add_argument("--aug-images", type=int, default=20000, help="images for lazy augmentation")
    p.add_argument("--encode", default=fmt.RAW,
                   help="how the default build stores images (raw, png, jpeg:Q, webp, webp:Q)")
    args = p.parse_args(argv)
    encoding = str(fmt.parse_encoding(args.encode))

    default = DEFAULT_BUILD.with_name(DEFAULT_BUILD.name + ("" if encoding == fmt.RAW else
                                                            "-" + encoding.replace(":", "-")))
    build = (Path(args.build) if args.build
             else make_bench_build(default, args.epochs, encoding=encoding))
    from frozenaug.trainer.read.stream import ShardStream

    s = ShardStream(build, batch_size=args.batch_size)
    epochs = min(args.epochs, s.epochs)
    count = epochs * s.num_samples
    import tensorflow as tf  # after the build: TF's own memory is part of the baseline below

    print(f"build {build}: {s.num_samples} images/epoch, {s.epochs} frozen epochs, "
          f"{s.image_shape}, batch {args.batch_size}, tf {tf.__version__}, "
          f"{os.cpu_count()} CPUs")
    load = os.getloadavg()
    drain(s.dataset(repeat=True), 4 * args.batch_size)  # warm: TF graph, page cache
    # Peak RSS of the reader alone, before the in-memory set exists.
    with PeakRSS() as rss:
        base = rss.peak
        reader = [timed(s.dataset(repeat=True), count)]
    x = np.concatenate([b[0] for b in s.iter_numpy(0)])
    y = np.concatenate([b[1] for b in s.iter_numpy(0)])
    mem_ds = in_memory(x, y, args.batch_size)
    drain(mem_ds, 4 * args.batch_size)
    memory = []
    # Best of --rounds, reader and in-memory rounds alternating: other processes share the
    # CPU, and alternating exposes both to the same changes in load.
    for r in range(args.rounds):
        memory.append(timed(mem_ds, count))
        if r:
            reader.append(timed(s.dataset(repeat=True), count))
    load = tuple(map(max, load, os.getloadavg()))
    (rate, _, others), cpu = max(reader), min(c for _, c, _ in reader)
    (mem_rate, _, mem_others), mem_cpu = max(memory), min(c for _, c, _ in memory)
    print(f"shard reader      {rate:>9,.0f} images/s  {cpu:5.1f} us CPU/image  ({count:,} images "
          f"= {epochs} frozen epochs per round); peak RSS {rss.peak / 2**30:.2f} GiB "
          f"(+{(rss.peak - base) / 2**30:.2f} over {base / 2**30:.2f} before reading)")
    print(f"in-memory numpy   {mem_rate:>9,.0f} images/s  {mem_cpu:5.1f} us CPU/image  "
          "(same count)")
    aug_ds = in_memory(x, y, args.batch_size, augment=True)
    drain(aug_ds, 4 * args.batch_size)
    n, dt = drain(aug_ds, args.aug_images)
    lazy = n / dt
    print(f"lazy augmentation {lazy:>9,.0f} images/s  ({n:,} images)")
    print(f"reader / in-memory {rate / mem_rate:.2f}x (CPU per image, in-memory / reader "
          f"{mem_cpu / cpu:.2f}x)   "
          f"reader / lazy augmentation {rate / lazy:.1f}x   "
          "(targets: >= 0.9x, >= 30,000 images/s, RSS <= 1.5 GB)")
    print(f"best of {args.rounds} rounds each; other processes kept {others:.2f} and "
          f"{mem_others:.2f} CPU cores busy during the best rounds; load average (1, 5, 15 min, "
          f"highest seen) {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
