"""The whole pipeline on the shared blood-cell training set: scan -> build -> fit -> evaluate.

Meant for a GPU machine (or a long CPU run with a small model). Prints clean and distorted
test accuracy, wall time per phase and images/s.

    python bench/realrun.py --model convnext_tiny --weights imagenet --out /tmp/realrun
    python bench/realrun.py --model simple_cnn --weights none --epochs 2 --quick   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bloodcells"


def unpack(dest: Path) -> Path:
    npz = dest / "bloodcells.npz"
    if not npz.exists():
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(SHARED / "unpack.py"), str(npz)], check=True)
    return npz


def phase(name: str, cmd: list[str], timings: dict[str, float]) -> None:
    print(f"\n=== {name}: {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    timings[name] = time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", default=None, help="npz or class folder (default: shared set)")
    ap.add_argument("--out", default="/tmp/frozenaug-realrun")
    ap.add_argument("--model", default="convnext_tiny")
    ap.add_argument("--weights", default="imagenet")
    ap.add_argument("--policy", default="heavy")
    ap.add_argument("--frozen-epochs", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=20, help="coarse epochs; fine = the same")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    ap.add_argument("--quick", action="store_true", help="K=1, 1+1 epochs: a smoke run")
    args = ap.parse_args()

    out = Path(args.out)
    data = Path(args.input) if args.input else unpack(out)
    k, epochs = (1, 1) if args.quick else (args.frozen_epochs, args.epochs)
    shards, run, ev = out / "shards", out / "run", out / "eval"
    exe = [sys.executable, "-m"]
    t: dict[str, float] = {}
    phase("build", exe + ["builder", "build", str(data), "--out", str(shards), "--epochs",
                          str(k), "--policy", args.policy, "--jobs", str(args.jobs)], t)
    phase("fit", exe + ["trainer", "fit", str(shards), "--model", args.model, "--weights",
                        args.weights, "--epochs-coarse", str(epochs), "--epochs-fine",
                        str(epochs), "--batch-size", str(args.batch_size), "--out", str(run),
                        "--overwrite"], t)
    phase("evaluate", exe + ["trainer", "evaluate", str(run), str(shards), "--distort",
                             "--out", str(ev)], t)

    manifest = json.loads((shards / "manifest.json").read_text())
    metrics = json.loads((ev / "metrics.json").read_text())
    n_train = sum(s["samples"] for s in manifest["shards"] if s["split"] == "train")
    history = (run / "history.csv").read_text().strip().splitlines()
    trained = (len(history) - 1) * n_train / max(1, k)
    print("\n=== results")
    print(f"model {args.model} weights {args.weights} policy {args.policy} K={k}")
    print(f"build     {t['build']:8.1f} s  {n_train / t['build']:9.0f} augmented images/s")
    print(f"fit       {t['fit']:8.1f} s  {trained / t['fit']:9.0f} training images/s "
          f"({len(history) - 1} epochs)")
    print(f"evaluate  {t['evaluate']:8.1f} s")
    print(f"test accuracy (clean)      {metrics['accuracy']:.4f}  "
          f"macro F1 {metrics['macro_f1']:.4f}")
    rob = metrics.get("robustness")
    if rob:
        print(f"test accuracy (distorted)  {rob['mean_accuracy']:.4f}  (mean over families and "
              f"severities {rob['severities']})")
        for family, by_severity in sorted(rob["results"].items()):
            accs = "  ".join(f"{by_severity[str(s)]['accuracy']:.3f}" for s in rob["severities"])
            print(f"  {family:10s} {accs}")
        if "compound" in rob:  # the headline: 2-5 families per image
            print(f"test accuracy (compound)   {rob['compound']['accuracy']:.4f}  macro F1 "
                  f"{rob['compound']['macro_f1']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
