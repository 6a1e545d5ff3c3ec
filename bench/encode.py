"""Encoded shards: bytes per image and speed of each encoding, beside raw.

    python bench/encode.py [--n96 4096] [--n224 2048] [--threads 1,2,4] [--out encode.json]

Heavy-augmented train images of the shared blood-cell set (a fixed random subset, augmented as
the builder does: the heavy preset, per-sample seeds, then its MixUp/CutMix per shard) at 96x96
and resized to 224x224, written as shards of 2048 with the builder's own ``write_shard`` for
each encoding. Per encoding: bytes per image (the whole shard files), the ratio raw/encoded,
write images/s, reader images/s through ``ShardStream`` with 1, 2, 4 decode threads, and cv2
decode images/s on one thread. The machine may be shared: every rate comes with the process's CPU
time (all threads), as images per CPU-second, which other processes disturb far less than the
wall-clock rate; the load average is printed with the table. The augmented images are cached in
--work, so a second run measures again without augmenting again.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from frozenaug import format as fmt  # noqa: E402
from frozenaug.builder.write.shards import write_shard  # noqa: E402
from frozenaug.common.atomic import write_json  # noqa: E402

PACK_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "bloodcells"  # ../shared
ENCODINGS = ("raw", "png", "jpeg:95", "jpeg:90", "webp", "webp:90")
SHARD = 2048


def load_source(work: Path) -> tuple[np.ndarray, np.ndarray]:
    npz = work / "bloodcells.npz"
    if not npz.is_file():
        work.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(PACK_DIR / "unpack.py"), str(npz)], check=True)
    z = np.load(npz)
    return z["images"], z["labels"].ravel().astype(np.int64)


def augmented(work: Path, size: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, labels, soft labels or empty) of ``n`` heavy-augmented images, cached."""
    cache = work / f"heavy-{size}-{n}.npz"
    if cache.is_file():
        z = np.load(cache)
        return z["x"], z["y"], z["soft"]
    import cv2

    from frozenaug.builder.augment.augmenter import Augmenter
    from frozenaug.builder.augment.policy import preset
    from frozenaug.common.seeds import batch_seed, sample_seed

    images, labels = load_source(work)
    rows = np.sort(np.random.default_rng(0).permutation(len(images))[:n])
    x, y = images[rows], labels[rows]
    if size != x.shape[1]:
        x = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR) for im in x])
    aug = Augmenter(preset("heavy"))
    t = time.perf_counter()
    x = aug.augment_batch(x, [sample_seed(0, 0, int(r)) for r in rows])
    softs = []
    for i, a in enumerate(range(0, n, SHARD)):  # mixed per shard, as the builder does
        x[a:a + SHARD], soft = aug.mix(x[a:a + SHARD], y[a:a + SHARD], 8, batch_seed(0, 0, i))
        if soft is not None:
            softs.append(soft)
            y[a:a + SHARD] = soft.argmax(1)
    soft = np.concatenate(softs) if softs else np.empty((0, 8), np.float32)
    print(f"augmented {n} images at {size}x{size} in {time.perf_counter() - t:.0f} s",
          file=sys.stderr)
    np.savez(cache, x=x, y=y, soft=soft)
    return x, y, soft


def timed(fn) -> tuple[object, float, float]:
    """(result, wall s, process CPU s over all threads)."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def write_build(out: Path, x: np.ndarray, y: np.ndarray, soft: np.ndarray, enc: str) -> None:
    entries = []
    for i, a in enumerate(range(0, len(x), SHARD)):
        rel = fmt.shard_relpath("train", i, 0)
        entries.append(write_shard(
            out / rel, x[a:a + SHARD], y[a:a + SHARD], np.arange(a, min(a + SHARD, len(x))),
            class_names=[f"c{k}" for k in range(8)], split="train", shard_index=i, epoch=0,
            soft_labels=soft[a:a + SHARD] if len(soft) else None, relpath=rel, encoding=enc))
    write_json(out / fmt.MANIFEST_NAME, fmt.make_manifest(
        class_names=[f"c{k}" for k in range(8)], image_shape=x.shape[1:], epochs=1, seed=0,
        shards=entries, encoding=enc))


def read_all(build: Path, threads: int) -> int:
    from frozenaug.trainer.read.stream import ShardStream

    s = ShardStream(build, "train", batch_size=256, decode_threads=threads)
    n = 0
    for xb, _ in s.iter_numpy(0):
        n += len(xb)
    return n


def decode_rate(build: Path) -> tuple[float, float]:
    """Decode images/s and images/CPU-s on one thread (format.codec: simplejpeg for JPEG, cv2
    otherwise), over the whole encoded build."""
    from frozenaug.format import codec

    m = fmt.load_manifest(build)
    blobs = []
    for s in m.shards:
        with fmt.open_shard(m, s) as f:
            blobs.append((f[fmt.DS_IMAGE_BYTES][()], f[fmt.DS_IMAGE_OFFSETS][()]))
    out = np.empty((1, *m.image_shape), np.uint8)
    encoding = m.encoding_of(m.shards[0])

    def run() -> int:
        k = 0
        for data, off in blobs:
            for i in range(len(off) - 1):
                codec.decode_into(data[off[i]:off[i + 1]], out[0], encoding)
                k += 1
        return k

    n, wall, cpu = timed(run)
    return n / wall, n / cpu


def bench(args: argparse.Namespace, size: int, n: int, threads: list[int]) -> list[dict]:
    x, y, soft = augmented(args.work, size, n)
    rows = []
    for enc in args.encodings:
        build = args.work / f"build-{size}-{enc.replace(':', '-')}"
        if build.exists():
            import shutil

            shutil.rmtree(build)
        _, wall, cpu = timed(lambda: write_build(build, x, y, soft, enc))  # noqa: B023
        m = fmt.load_manifest(build)
        nbytes = sum(m.path_of(s).stat().st_size for s in m.shards)
        read_all(build, 1)  # warm the page cache
        reads = {}
        for t in threads if enc != fmt.RAW else threads[:1]:
            best = max((timed(lambda: read_all(build, t)) for _ in range(args.rounds)),  # noqa: B023
                       key=lambda r: r[0] / r[1])
            reads[t] = {"images_per_s": best[0] / best[1], "images_per_cpu_s": best[0] / best[2]}
        dec = decode_rate(build) if enc != fmt.RAW else (None, None)
        rows.append({"size": size, "encoding": enc, "images": len(x),
                     "bytes_per_image": nbytes / len(x), "write_images_per_s": len(x) / wall,
                     "write_images_per_cpu_s": len(x) / cpu, "read": reads,
                     "decode_images_per_s": dec[0], "decode_images_per_cpu_s": dec[1]})
        print(f"  {size} {enc}: done", file=sys.stderr)
    raw = next(r["bytes_per_image"] for r in rows if r["encoding"] == fmt.RAW)
    for r in rows:
        r["ratio_vs_raw"] = raw / r["bytes_per_image"]
    return rows


def table(rows: list[dict], threads: list[int]) -> str:
    head = (f"{'size':>4} {'encoding':8} {'KB/img':>7} {'raw/x':>6} {'write/s':>8} "
            f"{'(/cpu-s)':>8} " + " ".join(f"{f'read t{t}/s':>10} {'(/cpu-s)':>8}"
                                           for t in threads) + f" {'decode/s/thread':>15}")
    lines = [head]
    for r in rows:
        reads = []
        for t in threads:
            got = r["read"].get(t) or r["read"].get(str(t))
            if got is None:
                got = next(iter(r["read"].values()))  # raw: no decoding, one measurement
            reads.append(f"{got['images_per_s']:>10,.0f} {got['images_per_cpu_s']:>8,.0f}")
        dec = r["decode_images_per_s"]
        lines.append(f"{r['size']:>4} {r['encoding']:8} {r['bytes_per_image'] / 1000:>7.1f} "
                     f"{r['ratio_vs_raw']:>6.2f} {r['write_images_per_s']:>8,.0f} "
                     f"{r['write_images_per_cpu_s']:>8,.0f} " + " ".join(reads)
                     + f" {'-' if dec is None else f'{dec:,.0f}':>15}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n96", type=int, default=4096, help="images at 96x96")
    p.add_argument("--n224", type=int, default=2048, help="images at 224x224 (0: skip)")
    p.add_argument("--threads", default="1,2,4", help="decode threads of the reader")
    p.add_argument("--encodings", default=",".join(ENCODINGS))
    p.add_argument("--rounds", type=int, default=3, help="reader runs per setting (best counts)")
    p.add_argument("--work", type=Path, default=Path("/tmp/frozenaug-bench-encode"))
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    args.encodings = [str(fmt.parse_encoding(e)) for e in args.encodings.split(",")]
    if fmt.RAW not in args.encodings:
        args.encodings.insert(0, fmt.RAW)
    threads = [int(t) for t in args.threads.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()
    rows = bench(args, 96, args.n96, threads)
    if args.n224:
        rows += bench(args, 224, args.n224, threads)
    load1 = os.getloadavg()
    text = table(rows, threads)
    print(f"{os.cpu_count()} CPUs, load average {load0[0]:.1f} at start, {load1[0]:.1f} at end; "
          "rates are images/s (wall), with images per CPU-second of this process beside them")
    print(text)
    for r in rows:  # the acceptance: jpeg:95 at 96x96
        if r["size"] == 96 and r["encoding"] == "jpeg:95":
            two = r["read"].get(2) or {}
            print(f"jpeg:95 at 96x96: {r['ratio_vs_raw']:.2f}x smaller than raw; reader with 2 "
                  f"threads {two.get('images_per_s', 0):,.0f} images/s wall, "
                  f"{two.get('images_per_cpu_s', 0):,.0f} per CPU-second (decode-bound: 2 free "
                  f"cores give up to {2 * two.get('images_per_cpu_s', 0):,.0f} images/s)")
    if args.out:
        write_json(args.out, {"cpus": os.cpu_count(), "load_start": load0[0],
                              "load_end": load1[0], "threads": threads, "rows": rows,
                              "table": text})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
