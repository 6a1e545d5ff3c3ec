"""Crash safety of ``build`` under SIGKILL, and what per-chunk checksums would cost the reader.

    python bench/crash.py [--trials 20] [--images 300] [--seed 0] [--skip-fletcher]

Kill and resume. Writes a small npz, makes one uninterrupted reference build with the real CLI
in a subprocess, then per trial starts the same command in its own process group and SIGKILLs
the whole group (the CLI and its loky workers) at a random moment: after a random number of
finished shards plus a random delay, or at a random time since start. About a third of the
trials kill the resumed run once more. Then it runs the command to completion and compares
``manifest.json`` and every shard with the reference, byte for byte, and checks that no
``.work``, ``.tmp-*`` or ``.lock`` is left. Prints where the kills landed, trials and mismatches.

fletcher32. Writes one shard of 2048 96x96 images with and without HDF5's fletcher32 filter and
reads it in chunk-aligned blocks of 64 images, as trainer/read/stream.py does: raw ``preadv`` (the
reader's path for unfiltered chunks), h5py ``read_direct`` without and with fletcher32, and
sha256 of the whole file (what ``frozenaug-build verify`` pays), and raw reads plus a crc32 per
block (what per-block checksums kept beside the images would cost). Prints images/s and ratios.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1",
       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
MANIFEST = "manifest.json"


def make_input(path: Path, n: int, size: int = 32, seed: int = 0) -> Path:
    """n distinct noise images in 3 classes (none is a duplicate, so the scan keeps all)."""
    rng = np.random.default_rng(seed)
    np.savez(path, images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
             labels=(np.arange(n) % 3).astype(np.uint8))
    return path


def build_argv(inp: Path, out: Path, jobs: int) -> list[str]:
    return [sys.executable, "-m", "frozenaug.builder", "build", str(inp), "--out", str(out),
            "--size",
            "32", "--epochs", "3", "--shard-size", "16", "--seed", "5", "--jobs", str(jobs)]


def run_to_end(argv: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=ENV, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"build failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def done_count(out: Path) -> int:
    done = out / ".work" / "done"
    try:
        return sum(1 for p in done.iterdir() if p.suffix == ".json")
    except FileNotFoundError:
        return 0


def kill_at_random(argv: list[str], out: Path, rng: random.Random, total_s: float,
                   shards: int) -> str:
    """Start the build, SIGKILL its process group at a random point; say where it landed."""
    proc = subprocess.Popen(argv, env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    t0 = time.perf_counter()
    if rng.random() < 0.5:
        target = rng.randrange(shards)
        while done_count(out) < target and proc.poll() is None:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.05))
    else:
        time.sleep(rng.uniform(0, 0.95 * total_s))
    landed = (f"{time.perf_counter() - t0:.2f}s, {done_count(out)} shards done"
              + (", manifest written" if (out / MANIFEST).exists() else ""))
    if proc.poll() is not None:
        return landed + " (had finished)"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return landed


def leftovers(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*")
                  if p.name.startswith((".tmp-", ".lock", ".work")))


def snapshot(out: Path) -> dict[str, str]:
    """sha256 of manifest.json and of every shard it lists."""
    m = json.loads((out / MANIFEST).read_text())
    files = [MANIFEST, *(s["path"] for s in m["shards"])]
    return {f: hashlib.sha256((out / f).read_bytes()).hexdigest() for f in files}


@dataclass
class Trial:
    kills: list[str]
    mismatches: list[str]


def trial(inp: Path, out: Path, ref: dict[str, str], rng: random.Random, total_s: float,
          shards: int, jobs: int) -> Trial:
    """Kill a build (once or twice), finish it, compare with the reference."""
    argv = build_argv(inp, out, jobs)
    kills = [kill_at_random(argv, out, rng, total_s, shards)]
    if rng.random() < 1 / 3:
        kills.append(kill_at_random(argv, out, rng, total_s, shards))
    run_to_end(argv)
    got = snapshot(out)
    bad = sorted(f for f in set(ref) | set(got) if ref.get(f) != got.get(f))
    return Trial(kills, bad + [f"left behind: {p}" for p in leftovers(out)])


def kill_and_resume(trials: int, images: int, seed: int, workdir: Path) -> int:
    inp = make_input(workdir / "input.npz", images)
    # One reference per worker count: each sets that count's time window for random kills,
    # and the two must agree byte for byte (the worker count is not part of the output).
    totals, refs = {}, {}
    for jobs in (1, 2):
        totals[jobs] = run_to_end(build_argv(inp, workdir / f"ref{jobs}", jobs))
        refs[jobs] = snapshot(workdir / f"ref{jobs}")
    if refs[1] != refs[2]:
        print("reference builds with --jobs 1 and 2 differ")
        return 1
    ref = refs[1]
    shards = len(ref) - 1
    print(f"reference builds: {shards} shards; {totals[1]:.1f} s (--jobs 1), {totals[2]:.1f} s "
          "(--jobs 2) wall, interpreter start included")
    rng = random.Random(seed)
    failed = 0
    for i in range(trials):
        jobs = 1 + i % 2
        t = trial(inp, workdir / f"t{i:02d}", ref, rng, totals[jobs], shards, jobs)
        failed += bool(t.mismatches)
        status = "ok" if not t.mismatches else f"MISMATCH {t.mismatches[:3]}"
        print(f"trial {i:2d} jobs {jobs}: killed at {' | then '.join(t.kills)} -> {status}")
    print(f"kill-and-resume: {trials} trials, {failed} mismatches")
    return failed


def _read_rate(read, n: int, reps: int = 5) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        read()
        best = min(best, time.perf_counter() - t0)
    return n / best


def fletcher32_cost(workdir: Path, n: int = 2048, block: int = 64) -> None:
    import h5py

    images = np.random.default_rng(0).integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
    buf = np.empty((block, 96, 96, 3), np.uint8)
    rates, write = {}, {}
    for name, extra in (("plain", {}), ("fletcher32", {"fletcher32": True})):
        path = workdir / f"{name}.h5"
        t0 = time.perf_counter()
        with h5py.File(path, "w", libver=("earliest", "v110")) as f:
            f.create_dataset("images", data=images, chunks=(block, 96, 96, 3),
                             track_times=False, **extra)
        write[name] = n / (time.perf_counter() - t0)
        with h5py.File(path, "r") as f:
            ds = f["images"]

            def h5_read(ds=ds) -> None:
                for a in range(0, n, block):
                    ds.read_direct(buf, np.s_[a : a + block], np.s_[0:block])

            rates[f"h5py read_direct, {name}"] = _read_rate(h5_read, n)
            if name == "plain":
                offsets = [ds.id.get_chunk_info(i).byte_offset for i in range(n // block)]
                fd = os.open(path, os.O_RDONLY)

                def raw_read(fd: int = fd, offsets: list = offsets) -> None:
                    for off in offsets:
                        os.preadv(fd, [buf], off)

                def raw_crc(fd: int = fd, offsets: list = offsets) -> None:
                    for off in offsets:
                        os.preadv(fd, [buf], off)
                        zlib.crc32(buf)

                rates["raw preadv (the reader's path), plain"] = _read_rate(raw_read, n)
                rates["raw preadv + zlib.crc32 per block"] = _read_rate(raw_crc, n)
                os.close(fd)

    def sha() -> None:
        with open(workdir / "plain.h5", "rb") as f:
            h = hashlib.sha256()
            while chunk := f.read(1 << 22):
                h.update(chunk)

    rates["sha256 of the whole file (verify)"] = _read_rate(sha, n)
    base = rates["raw preadv (the reader's path), plain"]
    print(f"\nread cost of checksums: one shard of {n} images 96x96 (file in page cache), "
          f"blocks of {block}; best of 5")
    for k, v in rates.items():
        print(f"  {k:42s} {v:>10,.0f} images/s  ({base / v:.1f}x the raw read's time)")
    ratio = rates["h5py read_direct, plain"] / rates["h5py read_direct, fletcher32"]
    print(f"  fletcher32 / plain through h5py: {ratio:.2f}x slower reads")
    print(f"  write: plain {write['plain']:,.0f} images/s, fletcher32 "
          f"{write['fletcher32']:,.0f} images/s")


def _fletcher_copy(src: Path, dst: Path) -> None:
    """The same shard with fletcher32 on its images (everything else as written)."""
    import h5py

    with h5py.File(src, "r") as f, h5py.File(dst, "w", libver=("earliest", "v110")) as g:
        for name, ds in f.items():
            extra = {"chunks": ds.chunks, "fletcher32": True} if name == "images" else {}
            g.create_dataset(name, data=ds[()], track_times=False, **extra)
        for k, v in f.attrs.items():
            g.attrs[k] = v


def reader_cost(workdir: Path, shards: int = 3, n: int = 2048) -> None:
    """images/s of read.stream.ShardStream over one frozen epoch, plain vs fletcher32."""
    sys.path.insert(0, str(ROOT))
    from frozenaug import format as fmt
    from frozenaug.builder.write.shards import sha256_file, write_shard
    from frozenaug.common.atomic import write_json
    from frozenaug.trainer.read.stream import ShardStream

    rng = np.random.default_rng(0)
    rates = {}
    for kind in ("plain", "fletcher32"):
        root = workdir / f"build-{kind}"
        entries = []
        for i in range(shards):
            rel = fmt.shard_relpath("train", i, 0)
            images = rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
            entry = write_shard(root / rel, images, np.arange(n) % 8, np.arange(n),
                                class_names=[str(c) for c in range(8)], split="train",
                                shard_index=i, epoch=0, relpath=rel)
            if kind == "fletcher32":
                _fletcher_copy(root / rel, root / (rel + ".f"))
                os.replace(root / (rel + ".f"), root / rel)
                entry = fmt.ShardEntry(**{**entry.to_dict(), "sha256": sha256_file(root / rel)})
            entries.append(entry)
        write_json(root / fmt.MANIFEST_NAME, fmt.make_manifest(
            class_names=[str(c) for c in range(8)], image_shape=(96, 96, 3), epochs=1, seed=0,
            shards=entries))
        stream = ShardStream(root, "train", batch_size=64, seed=0)

        def epoch(stream: ShardStream = stream) -> None:
            for _ in stream.iter_numpy(0):
                pass

        rates[kind] = _read_rate(epoch, shards * n, reps=3)
    print(f"\nShardStream.iter_numpy, one epoch of {shards} x {n} images 96x96, batch 64 "
          "(page cache):")
    for kind, rate in rates.items():
        print(f"  {kind:11s} {rate:>10,.0f} images/s")
    print(f"  fletcher32 costs the reader {rates['plain'] / rates['fletcher32']:.2f}x")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-fletcher", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="frozenaug-crash-") as tmp:
        failed = kill_and_resume(args.trials, args.images, args.seed, Path(tmp))
        if not args.skip_fletcher:
            fletcher32_cost(Path(tmp))
            reader_cost(Path(tmp))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
