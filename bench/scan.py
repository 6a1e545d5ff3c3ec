#!/usr/bin/env python3
"""Benchmark the scan: vectorised pHash vs imagehash.phash, grouping, and the whole scan.

    python bench/scan.py [DATA] [--imagehash-n 1000] [--repeats 3] [--million]

DATA is any input ``load_dataset`` reads (default /tmp/bloodcells.npz, made from the project
folder with ``python ../shared/data/bloodcells/unpack.py /tmp/bloodcells.npz``). imagehash is
timed on the first ``--imagehash-n`` images only and its rate extrapolated (it is a per-image
loop, so its rate does not depend on N). Times are the best of ``--repeats`` runs.
``--million`` also groups one million synthetic hashes (the data set's hashes, each copied 73
times with 8 random bit flips) and reports time and peak traced memory.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from frozenaug.builder.clean.phash import phash  # noqa: E402
from frozenaug.builder.clean.scan import find_groups, scan_dataset  # noqa: E402
from frozenaug.data.intake import load_dataset  # noqa: E402


def best(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="?", default="/tmp/bloodcells.npz")
    p.add_argument("--imagehash-n", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threshold", type=int, default=None)
    p.add_argument("--million", action="store_true")
    args = p.parse_args(argv)

    t = time.perf_counter()
    ds = load_dataset(args.data)
    n = len(ds)
    print(f"data: {args.data}: {n} images {ds.images.shape[1:]}, "
          f"loaded in {time.perf_counter() - t:.2f} s; {os.cpu_count()} cores")

    import imagehash
    from PIL import Image

    k = min(args.imagehash_n, n)
    t_ih, ref = best(lambda: [imagehash.phash(Image.fromarray(im)) for im in ds.images[:k]], 1)
    t_ours, hashes = best(lambda: phash(ds.images), args.repeats)
    t_one, _ = best(lambda: phash(ds.images, jobs=1), args.repeats)
    ih_rate, our_rate = k / t_ih, n / t_ours
    print(f"imagehash.phash: {ih_rate:,.0f} images/s (timed on {k} images, extrapolated: "
          f"{n / ih_rate:.2f} s for all {n})")
    print(f"frozenaug.builder.clean.phash:   {our_rate:,.0f} images/s ({t_ours:.3f} s for {n}; "
          f"{n / t_one:,.0f} images/s with jobs=1)")
    print(f"speed-up: {our_rate / ih_rate:.1f}x")

    thr = {} if args.threshold is None else {"threshold": args.threshold}
    th = args.threshold if args.threshold is not None else 4
    uniq = len(np.unique(hashes))
    t_ap, g_ap = best(lambda: find_groups(hashes, th, method="allpairs"), args.repeats)
    t_mih, g_mih = best(lambda: find_groups(hashes, th, method="mih"), args.repeats)
    print(f"grouping {uniq} distinct hashes at threshold {th}: all-pairs {t_ap:.3f} s, "
          f"multi-index {t_mih:.3f} s, agree: {bool(np.array_equal(g_ap, g_mih))}")

    t_scan, result = best(lambda: scan_dataset(ds, **thr), args.repeats)
    s = result.summary()
    print(f"whole scan (hash + group + classify): {t_scan:.3f} s")
    print(f"removed {s['removed']} of {s['images']}, kept {s['kept']}; by reason: "
          + ", ".join(f"{r} {v} in {s['clusters_by_reason'][r]} clusters"
                      for r, v in s["removed_by_reason"].items()))

    if args.million:
        rng = np.random.default_rng(0)
        big = np.repeat(hashes, -(-1_000_000 // n))[:1_000_000]
        for _ in range(8):
            big ^= np.uint64(1) << rng.integers(0, 64, len(big)).astype(np.uint64)
        tracemalloc.start()
        t = time.perf_counter()
        g = find_groups(big, th)
        dt = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"one million hashes ({len(np.unique(big))} distinct): {dt:.1f} s, "
              f"{g.max() + 1} groups, peak traced memory {peak / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
