#!/usr/bin/env python3
"""Peak memory of the intake (and of a whole build) while the input grows 1x -> 16x.

    python bench/intake_rss.py [--data /tmp/ooc/blood.npz] [--work /tmp/ooc] [--factors 1,4,16]
                               [--folders 1,4] [--build] [--old ROOT] [--out rss.json]

The inputs are the shared blood-cell set (13,759 images of 96x96; make the npz with
``python ../shared/data/bloodcells/unpack.py /tmp/ooc/blood.npz``) replicated F times, copy k
being the 8 rotations/flips of the square (k % 8), rolled by 12 pixels for k >= 8, with +-1
noise on every copy but the first, so that the copies are neither equal nor near-duplicates to
the scan. They are written as stored (uncompressed) npz files, ``--folders`` factors also as
class folders of PNG files, under ``--work`` (reused when present; ~380 MiB per factor).

Each measurement is a fresh child process: ``intake`` runs ``load_dataset`` (the images into
the memory-mapped file) and ``fingerprint`` (VmHWM column), then the scan and split
(``clean_dataset``, "+scan" column: the peak of the whole child); ``build`` runs
``frozenaug-build build --epochs 1 --policy light --jobs 2``. The child's own peak
resident set is the kernel's ``VmHWM`` (anonymous + file-backed + shared pages, the number
``getrusage`` calls ru_maxrss; read from /proc just before the child exits). A sampler in this
process also reads ``RssAnon`` and ``RssFile`` of the child (and of its workers, for the
build) every 20 ms, so the table says which kind of page the peak is made of, and the CPU
seconds of the whole process tree (the wall time is inflated on a shared machine). ``--old ROOT``
also runs the intake with the code in ROOT (e.g. ``git archive`` of an earlier commit), for
comparison. The ratios printed last are VmHWM(largest factor) / VmHWM(1x) (issue 12's
acceptance: intake <= 1.3 at 16x).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from proctree import MIB, measure, proc_status

ROOT = Path(__file__).resolve().parents[1]
UNPACK = ROOT.parent / "shared" / "data" / "bloodcells" / "unpack.py"
CLASSES = ["basophil", "eosinophil", "erythroblast", "immature_granulocyte",
           "lymphocyte", "monocyte", "neutrophil", "platelet"]


# --- inputs ----------------------------------------------------------------------------------


def variant(images: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Copy ``k`` of a chunk: a rotation/flip of the square, a roll for k >= 8, +-1 noise."""
    out = np.rot90(images, k % 4, axes=(1, 2))
    if k % 8 >= 4:
        out = out[:, :, ::-1]
    if k >= 8:
        out = np.roll(out, 12 * (k // 8), axis=(1, 2))
    if k == 0:
        return np.ascontiguousarray(out)
    rng = np.random.default_rng([seed, k])
    noise = rng.integers(-1, 2, out.shape, dtype=np.int16)
    return (out.astype(np.int16) + noise).clip(0, 255).astype(np.uint8)


def base_set(data: Path) -> tuple[np.ndarray, np.ndarray]:
    if not data.is_file():
        data.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(UNPACK), str(data)], check=True)
    with np.load(data) as z:
        return z["images"], z["labels"].reshape(-1).astype(np.int64)


def write_npz(path: Path, images: np.ndarray, labels: np.ndarray, factor: int) -> None:
    """``factor`` copies as a stored npz, streamed a chunk at a time."""
    done = path.with_suffix(".complete")
    if path.is_file() and done.is_file():
        return
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        with z.open("images.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {
                "descr": "|u1", "fortran_order": False,
                "shape": (factor * len(images), *images.shape[1:])})
            for k in range(factor):
                for s in range(0, len(images), 2048):
                    f.write(variant(images[s : s + 2048], k).tobytes())
        with z.open("labels.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, np.tile(labels, factor))
        with z.open("class_names.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, np.array(CLASSES))
    tmp.rename(path)
    done.write_text("")


def write_folders(path: Path, images: np.ndarray, labels: np.ndarray, factor: int) -> None:
    import cv2

    if (path / ".complete").is_file():
        return
    shutil.rmtree(path, ignore_errors=True)
    for c in CLASSES:
        (path / c).mkdir(parents=True)
    for k in range(factor):
        for s in range(0, len(images), 2048):
            for i, img in enumerate(variant(images[s : s + 2048], k)):
                name = path / CLASSES[labels[s + i]] / f"{k:02d}-{s + i:05d}.png"
                cv2.imwrite(str(name), img[..., ::-1])
    (path / ".complete").write_text("")


# --- the measured children -------------------------------------------------------------------


def child_intake(data: str, spill: str) -> None:
    """Load, fingerprint, scan and split ``data``; print JSON with the times and VmHWM."""
    sys.path.insert(0, os.getcwd())  # the code under test: the working folder's builder/
    from frozenaug.builder.clean.cleaning import clean_dataset
    from frozenaug.data.intake import fingerprint, load_dataset

    t0 = time.perf_counter()
    kw = {"spill": spill} if "spill" in load_dataset.__kwdefaults__ else {}
    ds = load_dataset(data, **kw)
    t1 = time.perf_counter()
    fp = fingerprint(ds)
    t2 = time.perf_counter()
    hwm_intake = proc_status(os.getpid())["VmHWM"] / MIB  # the peak so far: load + fingerprint
    with tempfile.TemporaryDirectory(dir=spill) as out:
        result = clean_dataset(ds, out)
    t3 = time.perf_counter()
    s = result.scan.summary()
    print(json.dumps({
        "images": len(ds), "memmap": type(ds.images).__name__ == "memmap",
        "fingerprint": fp[:16], "scan_removed": s["removed"],
        "train": int(len(result.splits["train"])),
        "load_s": t1 - t0, "fingerprint_s": t2 - t1, "clean_s": t3 - t2,
        "vmhwm_mib": hwm_intake, "vmhwm_scan_mib": proc_status(os.getpid())["VmHWM"] / MIB,
        "cpu_s": sum(os.times()[:2]),
    }))


BUILD_LINE = re.compile(r"wrote (\d+) images in (\d+) shards.*?([\d.]+) s wall")


BUILD_ARGS = ["--epochs", "1", "--policy", "light", "--jobs", "2"]


def run_build(data: Path, out: Path, code: Path = ROOT, args: list[str] = BUILD_ARGS,
              keep: bool = False) -> dict:
    """The whole build in a child (the CLI), its tree's memory sampled; its own VmHWM is printed
    by a wrapper at exit. Adds the images and bytes of the shards; removes ``out`` unless
    ``keep``."""
    shutil.rmtree(out, ignore_errors=True)
    argv = ["frozenaug-build", "build", str(data), "--out", str(out), *args]
    wrapper = ("import json, os, runpy, sys, atexit\n"
               f"sys.path.insert(0, {str(code)!r})\n"
               f"sys.argv = {argv!r}\n"
               "def hwm():\n"
               "    for line in open('/proc/self/status'):\n"
               "        if line.startswith('VmHWM'):\n"
               "            print(json.dumps({'vmhwm_mib': int(line.split()[1]) / 1024,\n"
               "                              'cpu_s': sum(os.times()[:2])}), flush=True)\n"
               "atexit.register(hwm)\n"
               "runpy.run_module('builder', run_name='__main__')\n")
    r = measure([sys.executable, "-c", wrapper], cwd=code)
    m = json.loads((out / "manifest.json").read_text())
    r["build_images"] = sum(s["samples"] for s in m["shards"])
    r["build_bytes"] = sum((out / s["path"]).stat().st_size for s in m["shards"])
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return r


# --- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("/tmp/ooc/blood.npz"))
    p.add_argument("--work", type=Path, default=Path("/tmp/ooc"))
    p.add_argument("--factors", default="1,4,16")
    p.add_argument("--folders", default="", help="factors also measured as class folders")
    p.add_argument("--build", action="store_true", help="also time and measure a whole build")
    p.add_argument("--old", type=Path, help="also run the intake with the code in this folder")
    p.add_argument("--out", type=Path, help="write the rows as JSON here")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child_intake(*args.child)
        return 0

    factors = [int(f) for f in args.factors.split(",") if f]
    folders = [int(f) for f in args.folders.split(",") if f]
    # inputs (kept for a rerun), the intake's memory map, and the build's shards
    need = (sum(factors) + max(factors) * (3 if args.build else 1)) * 380 * MIB
    free = shutil.disk_usage(args.work if args.work.exists() else "/").free
    print(f"disk: {free / 2**30:.1f} GiB free under {args.work}, about {need / 2**30:.1f} GiB "
          "needed", file=sys.stderr)
    if free < need:
        raise SystemExit("not enough disk space for these factors; pass smaller --factors")
    images, labels = base_set(args.data)
    args.work.mkdir(parents=True, exist_ok=True)
    spill = args.work / "spill"
    spill.mkdir(exist_ok=True)
    inputs = []
    layouts = [("npz", f, args.work / f"rep{f}.npz", write_npz, "images") for f in factors]
    layouts += [("folders", f, args.work / f"rep{f}_dir", write_folders, "PNG files")
                for f in folders]
    for kind, f, path, write, what in layouts:
        t = time.perf_counter()
        write(path, images, labels, f)
        print(f"input {path}: {f} x {len(images):,} {what} ({time.perf_counter() - t:.0f} s)",
              file=sys.stderr)
        inputs.append((kind, f, path))
    del images

    rows = []
    codes = [("new", ROOT)] + ([("old", args.old.resolve())] if args.old else [])
    for kind, f, path in inputs:
        for name, code in codes:
            if name == "old" and f > 4:  # the old intake holds it all in memory: enough shown
                continue
            r = measure([sys.executable, str(ROOT / "bench" / "intake_rss.py"), "--child",
                         str(path), str(spill)], cwd=code)
            rows.append({"what": f"intake ({name})", "input": kind, "factor": f, **r})
            print(json.dumps(rows[-1]), file=sys.stderr)
        if args.build and kind == "npz":
            r = run_build(path, args.work / "build")
            rows.append({"what": "build", "input": kind, "factor": f, **r})
            print(json.dumps(rows[-1]), file=sys.stderr)

    print(f"\n{'what':<14} {'input':<8} {'x':>3} {'images':>9} {'wall s':>7} {'CPU s':>7} "
          f"{'VmHWM MiB':>10} {'+scan MiB':>9} {'anon MiB':>9} {'file MiB':>9} "
          f"{'worker MiB':>11} {'tree MiB':>9}")
    for r in rows:
        n = r.get("images", r.get("build_images", 0))
        build = r["what"] == "build"
        scan = f"{'-':>9}" if build else f"{r['vmhwm_scan_mib']:9.0f}"
        worker = f"{r['peak_worker_rss_mib']:11.0f}" if build else f"{'-':>11}"
        tree = f"{r['peak_tree_rss_mib']:9.0f}" if build else f"{'-':>9}"
        print(f"{r['what']:<14} {r['input']:<8} {r['factor']:>3} {n:>9,} {r['wall_s']:7.1f} "
              f"{r['tree_cpu_s']:7.1f} {r['vmhwm_mib']:10.0f} {scan} {r['peak_anon_mib']:9.0f} "
              f"{r['peak_file_mib']:9.0f} {worker} {tree}")
    for what in ("intake (new)", "intake (old)", "build"):
        for kind in ("npz", "folders"):
            sel = {r["factor"]: r for r in rows if r["what"] == what and r["input"] == kind}
            if 1 in sel and len(sel) > 1:
                top = max(sel)
                line = (f"{what}, {kind}: VmHWM {top}x / 1x = "
                        f"{sel[top]['vmhwm_mib'] / sel[1]['vmhwm_mib']:.2f}")
                if what == "build":
                    w = [sel[f]["peak_worker_rss_mib"] for f in (top, 1)]
                    line += f"; busiest worker {top}x / 1x = {w[0] / w[1]:.2f}"
                else:
                    sc = [sel[f]["vmhwm_scan_mib"] for f in (top, 1)]
                    line += f"; with the scan and split {top}x / 1x = {sc[0] / sc[1]:.2f}"
                print(line)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
