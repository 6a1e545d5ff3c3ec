"""Build throughput: frozen epochs written by ``frozenaug-build build`` vs lazy Keras augmentation.

    python bench/build.py [--data /tmp/bloodcells.npz] [--epochs 3] [--clean] [--keras-batches 40]

Runs the real CLI in a subprocess per case (heavy with --jobs 1 and 2, light with --jobs 2) and
reads its final line (images written, images/s of the writing phase, MiB, seconds); samples the
RSS of the whole process tree (the CLI and its loky workers) for the peak. Then applies the same
kinds of augmentation lazily, the way the original project did: Keras 3 preprocessing layers
(RandomFlip/Rotation/Zoom, RandAugment or AugMix, then MixUp or CutMix) mapped over a tf.data
pipeline of the same images in batches of 64, and counts images/s. Targets (issue 3): heavy
>= 1,500 images/s with 2 jobs and >= 7x lazy Keras; 2 jobs >= 1.6x 1 job; light >= 4,000/s.
Without --clean the scan is skipped so the numbers are the builder's own (load, write, workers).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
UNPACK = ROOT.parent / "shared" / "data" / "bloodcells" / "unpack.py"  # ../shared
LINE = re.compile(r"wrote (\d+) images in (\d+) shards.*?: ([\d,]+) images/s, ([\d,.]+) MiB, "
                  r"([\d.]+) s writing, ([\d.]+) s wall")


class PeakRSS:
    """Samples the summed RSS of a process and its descendants every ``interval`` seconds, and
    their summed PSS (shared pages, such as the memory-mapped input, counted once)."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.proc, self.interval, self.peak, self.peak_pss = psutil.Process(pid), interval, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                total = pss = 0
                for p in procs:
                    with contextlib.suppress(psutil.Error):
                        info = p.memory_full_info()
                        total += info.rss
                        pss += getattr(info, "pss", info.rss)
                self.peak = max(self.peak, total)
                self.peak_pss = max(self.peak_pss, pss)
            except psutil.Error:
                return
            self._stop.wait(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run_build(data: Path, out: Path, policy: str, jobs: int, epochs: int, clean: bool) -> dict:
    cmd = [sys.executable, "-m", "frozenaug.builder", "build", str(data), "--out", str(out),
           "--epochs", str(epochs), "--policy", policy, "--jobs", str(jobs)]
    if not clean:
        cmd.append("--no-clean")
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "TQDM_DISABLE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    rss = PeakRSS(proc.pid)
    stdout, stderr = proc.communicate()
    peak = rss.stop()
    wall = time.perf_counter() - t0
    m = LINE.search(stdout)
    if proc.returncode != 0 or not m:
        raise SystemExit(f"build failed ({proc.returncode}):\n{stdout}\n{stderr[-3000:]}")
    images, shards, rate, mib, write_s, build_wall = m.groups()
    return {"policy": policy, "jobs": jobs, "images": int(images), "shards": int(shards),
            "images_per_s": float(rate.replace(",", "")), "mib": float(mib.replace(",", "")),
            "write_s": float(write_s), "build_wall_s": float(build_wall), "process_wall_s": wall,
            "overall_images_per_s": int(images) / wall, "peak_rss_mib": peak / 2**20,
            "peak_pss_mib": rss.peak_pss / 2**20}


def keras_lazy(data: Path, batches: int, batch_size: int = 64) -> dict:
    """Lazy heavy augmentation with Keras 3 layers in tf.data (run in a child process)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    with np.load(data) as z:
        images, labels = z["images"], z["labels"].reshape(-1).astype(np.int64)
    n = min(len(images), (batches + 3) * batch_size)
    onehot = np.eye(int(labels.max()) + 1, dtype=np.float32)[labels[:n]]
    geometric = keras.Sequential([
        keras.layers.RandomFlip("horizontal_and_vertical"),
        keras.layers.RandomRotation(0.125, fill_mode="reflect"),
        keras.layers.RandomZoom(0.25, fill_mode="reflect"),
    ])
    randaugment = keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.6)
    augmix = keras.layers.AugMix(value_range=(0, 255), num_chains=2, factor=0.3)
    mixup, cutmix = keras.layers.MixUp(alpha=0.4), keras.layers.CutMix(factor=1.0)

    def augment(i, batch):
        x, y = batch
        x = geometric(tf.cast(x, tf.float32), training=True)
        # The heavy policy picks RandAugment or AugMix, then MixUp or CutMix: alternate by batch.
        x = tf.cond(i % 2 == 0, lambda: randaugment(x, training=True),
                    lambda: augmix(x, training=True))
        d = {"images": x, "labels": y}
        d = tf.cond((i // 2) % 2 == 0, lambda: mixup(d, training=True),
                    lambda: cutmix(d, training=True))
        return tf.cast(tf.clip_by_value(d["images"], 0, 255), tf.uint8), d["labels"]

    ds = (tf.data.Dataset.from_tensor_slices((images[:n], onehot)).batch(batch_size)
          .enumerate().map(augment, num_parallel_calls=tf.data.AUTOTUNE)
          .prefetch(tf.data.AUTOTUNE))
    it = iter(ds)
    for _ in range(3):  # warm-up: tracing and thread pools
        next(it)
    count, t0 = 0, time.perf_counter()
    for x, _ in it:
        count += int(x.shape[0])
    secs = time.perf_counter() - t0
    return {"images": count, "seconds": secs, "images_per_s": count / secs}


def run_keras(data: Path, batches: int) -> dict:
    cmd = [sys.executable, __file__, "--data", str(data), "--keras-only",
           "--keras-batches", str(batches)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    rss = PeakRSS(proc.pid)
    stdout, stderr = proc.communicate()
    peak = rss.stop()
    if proc.returncode != 0:
        raise SystemExit(f"keras benchmark failed:\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    return {**result, "peak_rss_mib": peak / 2**20}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="/tmp/bloodcells.npz")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--clean", action="store_true", help="include the scan (default: --no-clean)")
    p.add_argument("--keras-batches", type=int, default=20)
    p.add_argument("--skip-keras", action="store_true")
    p.add_argument("--keras-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    data = Path(args.data)
    if args.keras_only:
        print(json.dumps(keras_lazy(data, args.keras_batches)))
        return 0
    if not data.is_file():
        subprocess.run([sys.executable, str(UNPACK), str(data)], check=True)

    results = []
    with tempfile.TemporaryDirectory(prefix="frozenaug-bench-") as tmp:
        for policy, jobs in (("heavy", 1), ("heavy", 2), ("light", 2)):
            out = Path(tmp) / f"{policy}-{jobs}"
            r = run_build(data, out, policy, jobs, args.epochs, args.clean)
            shutil.rmtree(out)
            results.append(r)
            print(f"build {policy:5s} jobs {jobs}: {r['images']} images, "
                  f"{r['images_per_s']:,.0f} images/s writing "
                  f"({r['overall_images_per_s']:,.0f}/s incl. start, load, plan), "
                  f"{r['mib']:,.0f} MiB in {r['write_s']:.1f} s, wall {r['process_wall_s']:.1f} s, "
                  f"peak RSS {r['peak_rss_mib']:,.0f} MiB (PSS {r['peak_pss_mib']:,.0f})",
                  flush=True)
    h1, h2, light = results
    print(f"heavy jobs 2 / jobs 1: {h2['images_per_s'] / h1['images_per_s']:.2f}x (target >= 1.6)")
    print(f"heavy jobs 2: {h2['images_per_s']:,.0f} images/s (target >= 1,500); "
          f"light jobs 2: {light['images_per_s']:,.0f} images/s (target >= 4,000)")
    if not args.skip_keras:
        k = run_keras(data, args.keras_batches)
        print(f"lazy Keras heavy (tf.data, batch 64): {k['images_per_s']:,.0f} images/s over "
              f"{k['images']} images, peak RSS {k['peak_rss_mib']:,.0f} MiB")
        print(f"frozen heavy jobs 2 / lazy Keras: {h2['images_per_s'] / k['images_per_s']:.1f}x "
              "(target >= 7)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
