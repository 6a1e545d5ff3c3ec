#!/usr/bin/env python3
"""How the costs of a build grow with the images N and the frozen epochs K (issue 12, item 5).

    python bench/scale.py [--base 1000] [--factors 1,4,16] [--epochs 1,10]
                          [--encodings raw,jpeg:95] [--policy light] [--jobs 2]
                          [--work /tmp/ooc/scale] [--out scale.json]

For every N = base x factor (the first ``--base`` images of the shared blood-cell set,
replicated as in bench/intake_rss.py: rotations/flips, rolls and +-1 noise, so that the copies
are neither equal nor near-duplicates), every K in ``--epochs`` and every encoding, one
``frozenaug-build build`` runs in a child process, and then, in another, ``ShardStream`` reads
one frozen epoch of the train split (numpy batches of 256, shuffled, decoded). Measured: the
build's wall time and the CPU seconds of its whole process tree (wall time is inflated when
other processes share the CPUs), the bytes of its shards, the reader's images/s (the shards were
just written, so they are in the page cache), and the peak resident memory of the build's main
process (VmHWM), of its busiest worker and of the tree together.

The growth exponent of each cost is the slope of log(cost) against log(N x K), by least
squares over the runs of one encoding: time and bytes should grow linearly (exponent ~1), the
reader's images/s and the memory not at all (~0). A build has fixed costs (starting Python and
the workers, the scan), so at small N x K time grows slower than linearly; the exponent over
the larger half of the runs (N x K at or above the median) is printed beside the one over all
runs.

An encoding the build does not know (``--encode`` missing from ``frozenaug-build build --help``,
or refused by it) is skipped with a message. The default grid (3 x 2 x 2 builds, 231k images per
encoding) takes about 15-20 minutes on 2 shared cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from intake_rss import ROOT, base_set, measure, run_build, write_npz  # noqa: E402

READER = """
import json, os, sys, time
sys.path.insert(0, {root!r})
from frozenaug.trainer.read.stream import ShardStream
s = ShardStream({build!r}, "train", batch_size=256, shuffle=True, seed=0)
t, c, n = time.perf_counter(), sum(os.times()[:2]), 0
for x, _ in s.iter_numpy(0):
    n += len(x)
print(json.dumps({{"read_images": n, "read_s": time.perf_counter() - t,
                  "read_cpu_s": sum(os.times()[:2]) - c}}))
"""


def build_knows(encoding: str) -> str | None:
    """None if ``build --encode`` exists (or ``encoding`` is raw), else why it is skipped."""
    if encoding == "raw":
        return None
    help_text = subprocess.run([sys.executable, "-m", "frozenaug.builder", "build", "--help"],
                               cwd=ROOT,
                               capture_output=True, text=True,
                               env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}).stdout
    if "--encode" not in help_text:
        return "this build has no --encode option (raw shards only)"
    return None


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) against log(x); nan with fewer than two distinct x."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]
    if len({p[0] for p in pts}) < 2:
        return float("nan")
    lx, ly = np.array(pts).T
    return float(np.polyfit(lx, ly, 1)[0])


COSTS = [("build wall s", "wall_s"), ("build CPU s", "tree_cpu_s"), ("shard bytes", "build_bytes"),
         ("reader images/s", "read_rate"), ("main VmHWM", "vmhwm_mib"),
         ("worker peak RSS", "peak_worker_rss_mib"), ("tree peak RSS", "peak_tree_rss_mib")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("/tmp/ooc/blood.npz"),
                   help="the shared set as an npz (made with unpack.py when missing)")
    p.add_argument("--base", type=int, default=1000, help="images of the set to start from")
    p.add_argument("--factors", default="1,4,16", help="N = base x each factor")
    p.add_argument("--epochs", default="1,10", help="K, the frozen epochs")
    p.add_argument("--encodings", default="raw,jpeg:95")
    p.add_argument("--policy", default="light")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--work", type=Path, default=Path("/tmp/ooc/scale"))
    p.add_argument("--out", type=Path, help="write the rows and exponents as JSON here")
    args = p.parse_args(argv)

    factors = [int(f) for f in args.factors.split(",") if f]
    epochs = [int(k) for k in args.epochs.split(",") if k]
    encodings = [e for e in args.encodings.split(",") if e]
    args.work.mkdir(parents=True, exist_ok=True)
    need = max(factors) * args.base * max(epochs) * 96 * 96 * 3 * 1.2
    free = shutil.disk_usage(args.work).free
    if free < need:
        raise SystemExit(f"{args.work}: {free / 2**30:.1f} GiB free, the largest build needs "
                         f"about {need / 2**30:.1f} GiB; pass smaller --factors or --base")
    images, labels = base_set(args.data)
    images, labels = images[: args.base], labels[: args.base]
    inputs = {}
    for f in factors:
        inputs[f] = args.work / f"base{args.base}x{f}.npz"
        write_npz(inputs[f], images, labels, f)
    del images

    rows, skipped = [], {}
    for enc in encodings:
        why = build_knows(enc)
        if why:
            skipped[enc] = why
            print(f"skipping --encode {enc}: {why}", file=sys.stderr)
            continue
        for f in factors:
            for k in epochs:
                out = args.work / "build"
                build_args = ["--epochs", str(k), "--policy", args.policy, "--jobs",
                              str(args.jobs), *([] if enc == "raw" else ["--encode", enc])]
                t = time.perf_counter()
                try:
                    r = run_build(inputs[f], out, ROOT, build_args, keep=True)
                except SystemExit as e:  # the build refused the encoding, or failed
                    if enc != "raw" and "--encode" in str(e).strip().splitlines()[-1]:
                        skipped[enc] = str(e).splitlines()[-1]
                        print(f"skipping --encode {enc}: {skipped[enc]}", file=sys.stderr)
                        break
                    raise
                reader = measure([sys.executable, "-c",
                                  READER.format(root=str(ROOT), build=str(out))])
                r.update({k: reader[k] for k in ("read_images", "read_s", "read_cpu_s")})
                r["read_rate"] = r["read_images"] / r["read_s"]
                shutil.rmtree(out, ignore_errors=True)
                row = {"encoding": enc, "factor": f, "N": f * args.base, "K": k,
                       "NK": f * args.base * k, **r}
                rows.append(row)
                print(f"{enc} N={row['N']} K={k}: {time.perf_counter() - t:.0f} s "
                      f"({r['build_images']:,} images written)", file=sys.stderr)
            if enc in skipped:
                break

    print(f"\n{'encoding':<9} {'N':>6} {'K':>3} {'N*K':>8} {'written':>8} {'wall s':>7} "
          f"{'CPU s':>7} {'MiB':>8} {'B/image':>8} {'read img/s':>10} {'main MiB':>9} "
          f"{'worker MiB':>10} {'tree MiB':>9}")
    for r in rows:
        print(f"{r['encoding']:<9} {r['N']:>6,} {r['K']:>3} {r['NK']:>8,} "
              f"{r['build_images']:>8,} {r['wall_s']:7.1f} {r['tree_cpu_s']:7.1f} "
              f"{r['build_bytes'] / 2**20:8.1f} {r['build_bytes'] / r['build_images']:8,.0f} "
              f"{r['read_rate']:10,.0f} {r['vmhwm_mib']:9.0f} "
              f"{r['peak_worker_rss_mib']:10.0f} {r['peak_tree_rss_mib']:9.0f}")
    exponents = {}
    print("\ngrowth exponents: slope of log(cost) vs log(N*K) [all runs / N*K >= median]"
          " (time, bytes ~1; reader rate, memory ~0)")
    for enc in dict.fromkeys(r["encoding"] for r in rows):
        sel = [r for r in rows if r["encoding"] == enc]
        median = float(np.median([r["NK"] for r in sel]))
        big = [r for r in sel if r["NK"] >= median]
        exponents[enc] = {}
        parts = []
        for name, key in COSTS:
            x = [float(r["NK"]) for r in sel]
            e_all = slope(x, [float(r[key]) for r in sel])
            e_big = slope([float(r["NK"]) for r in big], [float(r[key]) for r in big])
            exponents[enc][key] = {"all": e_all, "large": e_big}
            parts.append(f"{name} {e_all:.2f}/{e_big:.2f}")
        print(f"  {enc}: " + ", ".join(parts))
    for enc, why in skipped.items():
        print(f"  {enc}: skipped ({why})")
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "exponents": exponents,
                                        "skipped": skipped, "base": args.base}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
