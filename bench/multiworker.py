"""One worker against two: ``fit --strategy multiworker`` on 127.0.0.1, same global batch.

Builds a small real build (default: data/sample at 32x32, light policy, K=2), then trains the
same model three times with the same global batch: one process with ``--strategy default``,
one worker of a one-worker TF_CONFIG cluster, and two workers of a two-worker cluster (each
with half the batch), all through the installed ``frozenaug-train`` console script. Prints
val loss / val accuracy per epoch of each, and wall and CPU time per run.

The two clusters train on the same global batches (a cluster drops each epoch's last partial
batch, whatever its size); ``--strategy default`` keeps that batch, so its curve differs by
one extra small step per epoch unless the global batch divides the train split. With dropout
(the default config) the workers draw other dropout masks than one process, so the curves
agree only within noise; ``--dropout 0`` leaves the order of float sums as the only
difference between the clusters. On one machine two workers are not faster: they share its
cores, each reads every image, and every step all-reduces the gradients over gRPC.

    python bench/multiworker.py                      # data/sample, simple_cnn, 3 epochs
    python bench/multiworker.py --input /tmp/x/bloodcells.npz --size 64 --epochs 5
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def run(name: str, out: Path, fit_args: list[str], workers: int | None,
        batch: int) -> dict:
    """Train once: ``workers`` None = --strategy default, else a cluster of that many; returns
    wall and CPU seconds and the history."""
    ports = free_ports(workers or 1)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "NO_ALBUMENTATIONS_UPDATE": "1"}
    env.pop("TF_CONFIG", None)
    procs = []
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    for i in range(workers or 1):
        args = [str(BIN / "frozenaug-train"), *fit_args, "--out", str(out / name),
                "--batch-size", str(batch // (workers or 1)), "--overwrite"]
        e = dict(env)
        if workers:
            args += ["--strategy", "multiworker"]
            e["TF_CONFIG"] = tf_config(ports, i)
        log = open(out / f"{name}-{i}.log", "w")  # noqa: SIM115
        procs.append((subprocess.Popen(args, env=e, stdout=log, stderr=subprocess.STDOUT), log))
    for p, log in procs:
        p.wait()
        log.close()
        if p.returncode:
            sys.exit(f"{name}: exit {p.returncode}; see {log.name}")
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    with open(out / name / "history.csv") as f:
        rows = list(csv.DictReader(f))
    return {"wall": wall, "cpu": cpu, "history": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", default=str(ROOT / "data" / "sample"),
                    help="npz or class folder (default data/sample)")
    ap.add_argument("--out", default="/tmp/frozenaug-bench-multiworker")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--policy", default="light")
    ap.add_argument("--frozen-epochs", type=int, default=2)
    ap.add_argument("--model", default="simple_cnn")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64, help="the global batch")
    ap.add_argument("--dropout", type=float, default=None,
                    help="head dropout (default: the fit default, 0.3)")
    args = ap.parse_args()
    if args.batch_size % 2:
        ap.error("--batch-size must be even (two workers take half each)")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    build = out / "build"
    if not (build / "manifest.json").is_file():
        subprocess.run([str(BIN / "frozenaug-build"), "build", args.input, "--out", str(build),
                        "--size", str(args.size), "--epochs", str(args.frozen_epochs),
                        "--policy", args.policy, "--overwrite"], check=True)
    fit_args = ["fit", str(build), "--model", args.model, "--epochs-coarse", str(args.epochs)]
    if args.dropout is not None:
        cfg = out / "fit.json"
        cfg.write_text(json.dumps({"dropout": args.dropout}))
        fit_args += ["--config", str(cfg)]

    results = {}
    for name, workers in (("default", None), ("1-worker", 1), ("2-workers", 2)):
        print(f"training {name} ...", file=sys.stderr, flush=True)
        results[name] = run(name, out, fit_args, workers, args.batch_size)

    names = list(results)
    print(f"\n{args.model}, {args.input} at {args.size}x{args.size}, global batch "
          f"{args.batch_size}, dropout {args.dropout if args.dropout is not None else 'default'}")
    print("epoch | " + " | ".join(f"{n} val_loss" for n in names) + " | "
          + " | ".join(f"{n} val_acc" for n in names) + " | max |Δ val_loss|")
    for e in range(len(results[names[0]]["history"])):
        losses = [float(results[n]["history"][e]["val_loss"]) for n in names]
        accs = [float(results[n]["history"][e]["val_accuracy"]) for n in names]
        print(f"{e:5d} | " + " | ".join(f"{v:.5f}" for v in losses) + " | "
              + " | ".join(f"{v:.4f}" for v in accs) + f" | {max(losses) - min(losses):.2e}")
    base = results["default"]
    print("\nrun | wall s | CPU s (all processes) | wall / default")
    for n in names:
        r = results[n]
        print(f"{n} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['wall'] / base['wall']:.2f}")
    print(f"(load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
