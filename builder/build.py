"""``frozenaug-build build``: load, clean, split, then write K frozen augmented epochs as shards.

Every shard is one task for a joblib worker. A sample's augmentation is seeded by
``sample_seed(seed, epoch, input_row)`` and a shard's mixing by (seed, epoch, shard index), so
the bytes depend on neither the worker count nor the order in which tasks finish. Workers read
the input from ``.work/input.npy`` by memory map instead of receiving pickled arrays.

A killed build resumes: ``.work/plan.json`` says what is being built (config, input
fingerprint, policy hash, version), ``.work/done/*.json`` lists each finished shard, and
``manifest.json`` is written last, after which ``.work`` is removed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Parallel, delayed, parallel_config
from tqdm import tqdm

import builder
from builder import format as fmt
from builder.atomic import atomic_path, remove_stale_temporaries, write_json
from builder.clean import clean_dataset
from builder.config import BuildConfig, load_build_config
from builder.errors import InputError
from builder.intake import fingerprint, load_dataset
from builder.policy import Augmenter, Policy, batch_seed, load_policy, sample_seed
from builder.shards import sha256_file, write_shard

# A stream of the seed for the train shuffle, apart from policy's sample and batch seeds.
_SHUFFLE_STREAM = 1


@dataclass(frozen=True)
class Task:
    """One shard to write: which input rows, in which order."""

    split: str
    epoch: int
    index: int
    rows: np.ndarray  # int64 input rows
    labels: np.ndarray  # int64 labels of those rows

    @property
    def relpath(self) -> str:
        return fmt.shard_relpath(self.split, self.index, self.epoch)


@dataclass(frozen=True)
class WorkerContext:
    """What every task needs besides its rows; small, pickled once per task."""

    out_dir: str
    input_npy: str
    class_names: list[str]
    policy: Policy
    seed: int


@dataclass
class BuildResult:
    status: str  # "built" or "up to date"
    images_written: int = 0
    bytes_written: int = 0
    shards_written: int = 0
    shards_kept: int = 0
    write_seconds: float = 0.0
    wall_seconds: float = 0.0


def plan_tasks(splits: dict[str, np.ndarray], labels: np.ndarray, cfg: BuildConfig) -> list[Task]:
    """Train: K permutations of the train rows, one per frozen epoch, cut into shards.
    Val/test: once, in split order, unaugmented."""
    tasks = []
    train = np.asarray(splits.get("train", []), dtype=np.int64)
    for epoch in range(cfg.epochs):
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, epoch, _SHUFFLE_STREAM]))
        rows = train[rng.permutation(len(train))]
        for i, start in enumerate(range(0, len(rows), cfg.shard_size)):
            r = rows[start : start + cfg.shard_size]
            tasks.append(Task("train", epoch, i, r, labels[r]))
    for split in ("val", "test"):
        rows = np.asarray(splits.get(split, []), dtype=np.int64)
        for i, start in enumerate(range(0, len(rows), cfg.shard_size)):
            r = rows[start : start + cfg.shard_size]
            tasks.append(Task(split, -1, i, r, labels[r]))
    return tasks


# The build directory's state: plan, done markers, refusal and resume.

WORK = ".work"
# What a build writes into its folder; --overwrite removes these names and nothing else.
CLEAN_NAMES = ("scan.json", "scan.png", "split.json")
BUILD_NAMES = (fmt.MANIFEST_NAME, WORK, *fmt.SPLITS, *CLEAN_NAMES)
# A folder holding only what `frozenaug-build clean` wrote may take a build.
_CLEAN_OUTPUTS = {*CLEAN_NAMES, "cleaned.npz"}
_KEY_FIELDS = ("input_fingerprint", "policy_hash", "frozenaug_version")


def work_dir(out: str | os.PathLike) -> Path:
    return Path(out) / WORK


def done_path(out: str | os.PathLike, relpath: str) -> Path:
    return work_dir(out) / "done" / (relpath.replace("/", "__") + ".json")


def build_key(cfg: BuildConfig, input_fingerprint: str, policy_hash: str, version: str) -> dict:
    """Everything that decides a build's bytes; equal keys may share (resume) shards."""
    return {"config": cfg.to_dict(), "input_fingerprint": input_fingerprint,
            "policy_hash": policy_hash, "frozenaug_version": version}


def _manifest_key(raw: Any) -> dict | None:
    try:
        return {"config": raw["config"], "input_fingerprint": raw["input"]["fingerprint"],
                "policy_hash": raw["policy_hash"], "frozenaug_version": raw["frozenaug_version"]}
    except (KeyError, TypeError):
        return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _differences(old: Any, new: dict) -> str:
    if not isinstance(old, dict) or not isinstance(old.get("config"), dict):
        return "unreadable or not a frozenaug build"
    keys = sorted(set(old["config"]) | set(new["config"]))
    diff = [f"config.{k}" for k in keys if old["config"].get(k) != new["config"].get(k)]
    return ", ".join(diff + [k for k in _KEY_FIELDS if old.get(k) != new[k]])


def _clear(out: Path) -> None:
    for name in BUILD_NAMES:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    remove_stale_temporaries(out)


def prepare(out: Path, key: dict, *, overwrite: bool) -> str:
    """Decide between "up to date", "resume" and "fresh" (clearing a replaced build).

    Raises:
        InputError: ``out`` holds another build, or other files, and ``overwrite`` is off.
    """
    manifest, plan = out / fmt.MANIFEST_NAME, work_dir(out) / "plan.json"
    found: tuple[Path, Any] | None = None
    if manifest.is_file():
        raw = _read_json(manifest)
        if _manifest_key(raw) == key:
            if all((out / s["path"]).is_file() for s in raw["shards"]):
                shutil.rmtree(work_dir(out), ignore_errors=True)
                return "up to date"
            # A shard went missing: resume, keeping the listed shards whose bytes still match.
            write_json(plan, key)
            for s in raw["shards"]:
                if (out / s["path"]).is_file():
                    write_json(done_path(out, s["path"]), s)
            manifest.unlink()
            return "resume"
        found = (manifest, _manifest_key(raw))
    elif plan.is_file():
        old = _read_json(plan)
        if old == key:
            return "resume"
        found = (plan, old)
    elif (out.is_dir() and any(p.name not in _CLEAN_OUTPUTS for p in out.iterdir())
          and not overwrite):
        raise InputError(
                f"{out}: not empty and holds no frozenaug build; choose an empty folder, or "
                f"pass --overwrite (removes only {', '.join(BUILD_NAMES)} there)"
            )
    if found is not None and not overwrite:
        raise InputError(
            f"{out}: holds a build of another config or input (differs in: "
            f"{_differences(found[1], key)}; see {found[0]}); pass --overwrite to replace it, "
            "or choose another --out"
        )
    if out.is_dir():
        _clear(out)
    write_json(plan, key)
    return "fresh"


def save_clean(out: Path, splits: dict[str, np.ndarray], scan_summary: dict | None) -> None:
    write_json(work_dir(out) / "scan_summary.json", {"scan": scan_summary})
    with atomic_path(work_dir(out) / "splits.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **splits)  # written last: its presence means both files are complete


def load_clean(out: Path) -> tuple[dict[str, np.ndarray], dict | None] | None:
    npz, summary = work_dir(out) / "splits.npz", _read_json(work_dir(out) / "scan_summary.json")
    if not npz.is_file() or not isinstance(summary, dict):
        return None
    with np.load(npz) as z:
        return {k: z[k].astype(np.int64) for k in z.files}, summary["scan"]


def finished_shards(out: Path, relpaths: list[str]) -> dict[str, fmt.ShardEntry]:
    """Shards a previous run finished whose files still hash to what it recorded."""
    kept = {}
    for rel in relpaths:
        d = _read_json(done_path(out, rel))
        if not isinstance(d, dict):
            continue
        try:
            entry = fmt.ShardEntry.from_dict(d)
        except (KeyError, TypeError, ValueError):
            continue
        path = out / rel
        if entry.path == rel and path.is_file() and sha256_file(path) == entry.sha256:
            kept[rel] = entry
    return kept


# Per worker process: the memory-mapped input and the built augmenter, reused across tasks.
# The input is keyed by inode and mtime so that a reused worker never reads a replaced file.
_INPUT_CACHE: dict[tuple, np.ndarray] = {}
_AUGMENTER_CACHE: dict[str, Augmenter] = {}


def _input_images(path: str) -> np.ndarray:
    st = os.stat(path)
    key = (path, st.st_ino, st.st_mtime_ns, st.st_size)
    if key not in _INPUT_CACHE:
        _INPUT_CACHE.clear()
        _INPUT_CACHE[key] = np.load(path, mmap_mode="r")
    return _INPUT_CACHE[key]


def _augmenter(policy: Policy) -> Augmenter:
    if policy.hash not in _AUGMENTER_CACHE:
        _AUGMENTER_CACHE[policy.hash] = Augmenter(policy)
    return _AUGMENTER_CACHE[policy.hash]


def write_task(task: Task, ctx: WorkerContext) -> fmt.ShardEntry:
    """Worker: augment (train only), mix if the policy mixes, write the shard, mark it done."""
    source = _input_images(ctx.input_npy)
    images = np.empty((len(task.rows), *source.shape[1:]), source.dtype)
    order = np.argsort(task.rows, kind="stable")  # read the file front to back
    images[order] = source[task.rows[order]]
    labels, soft, policy_hash = task.labels, None, ""
    if task.split == "train":
        policy_hash = ctx.policy.hash
        seeds = [sample_seed(ctx.seed, task.epoch, int(r)) for r in task.rows]
        augmenter = _augmenter(ctx.policy)
        images = augmenter.augment_batch(images, seeds)
        images, soft = augmenter.mix(images, labels, len(ctx.class_names),
                                     batch_seed(ctx.seed, task.epoch, task.index))
        if soft is not None:
            labels = np.argmax(soft, axis=1)  # a mixed sample's label: its dominant class
    entry = write_shard(
        Path(ctx.out_dir) / task.relpath, images, labels, task.rows,
        class_names=ctx.class_names, split=task.split, shard_index=task.index,
        epoch=task.epoch, policy_hash=policy_hash, soft_labels=soft, relpath=task.relpath,
    )
    write_json(done_path(ctx.out_dir, task.relpath), entry.to_dict())
    return entry


def _write_input(path: Path, images: np.ndarray) -> None:
    """Save the input once for the workers' memory maps (kept if a resumed build has it)."""
    if path.is_file():
        try:
            old = np.load(path, mmap_mode="r")
            if old.shape == images.shape and old.dtype == images.dtype:
                return
        except (OSError, ValueError):
            pass
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(images))


def _split_and_scan(ds: Any, cfg: BuildConfig, out: Path) -> tuple[dict, dict | None]:
    """Clean and split, or reuse the result a resumed build saved in ``.work``."""
    saved = load_clean(out)
    if saved is not None:
        return saved
    result = clean_dataset(
        ds, out, threshold=cfg.threshold, outlier_min=cfg.outlier_min, fractions=cfg.split,
        seed=cfg.seed, jobs=cfg.jobs, scan=cfg.clean,
        medmnist_split=cfg.medmnist_split,
    )
    splits = {k: np.asarray(v, dtype=np.int64) for k, v in result.splits.items()}
    # Through JSON now, so a fresh and a resumed build put identical summaries in the manifest.
    summary = json.loads(json.dumps(result.scan.summary())) if result.scan is not None else None
    save_clean(out, splits, summary)
    return splits, summary


@contextlib.contextmanager
def _backend(cfg: BuildConfig) -> Iterator[None]:
    """joblib's backend for the shard tasks: local loky processes, or a dask cluster."""
    if cfg.backend != "dask":
        with parallel_config(backend="loky"):
            yield
        return
    try:
        from dask.distributed import Client
    except ImportError:
        raise InputError(
            "--backend dask: needs dask.distributed (pip install 'frozenaug[dask]')"
        ) from None
    # The workers must see --out and .work/input.npy at the same path (a shared filesystem).
    with Client(cfg.scheduler), parallel_config(backend="dask"):
        yield


def run_build(cfg: BuildConfig) -> BuildResult:
    """Build (or resume, or find up to date) the shards ``cfg`` describes."""
    t0 = time.perf_counter()
    out = Path(cfg.out)
    policy = load_policy(cfg.policy)  # fail on a bad policy before loading anything big
    ds = load_dataset(
        cfg.input, size=tuple(cfg.size), class_names=cfg.classes, strict=cfg.strict,
        medmnist_split=cfg.medmnist_split,
    )
    key = build_key(cfg, fingerprint(ds), policy.hash, builder.__version__)
    state = prepare(out, key, overwrite=bool(cfg.overwrite))
    if state == "up to date":
        return BuildResult(status="up to date", wall_seconds=time.perf_counter() - t0)
    loaded = [ds]
    del ds  # _build drops the pixels once they are on disk; no frame here may keep them alive
    try:
        result = _build(cfg, loaded, policy, key)
    except InputError:
        if state == "fresh":  # bad input found late: leave no half-started build behind
            for name in (WORK, *fmt.SPLITS):
                shutil.rmtree(out / name, ignore_errors=True)
            with contextlib.suppress(OSError):
                out.rmdir()  # only if empty
        raise
    result.wall_seconds = time.perf_counter() - t0
    return result


def _build(cfg: BuildConfig, loaded: list, policy: Policy, key: dict) -> BuildResult:
    out = Path(cfg.out)
    ds = loaded.pop()

    if ds.skipped:
        print(f"{cfg.input}: skipped {len(ds.skipped)} unreadable image(s), e.g. "
              f"{ds.skipped[0]} (--strict makes this an error)", file=sys.stderr)
    class_names = list(ds.class_names)
    skipped = len(ds.skipped)
    labels = np.asarray(ds.labels, dtype=np.int64)
    image_shape = tuple(int(v) for v in ds.images.shape[1:])
    num_samples = len(labels)
    splits, scan_summary = _split_and_scan(ds, cfg, out)
    if not len(splits.get("train", [])):
        raise InputError(f"{cfg.input}: no training images left after cleaning and splitting")
    input_npy = work_dir(out) / "input.npy"
    _write_input(input_npy, ds.images)
    del ds  # workers read the memory map; the parent need not hold the pixels

    tasks = plan_tasks(splits, labels, cfg)
    work = {out, work_dir(out), work_dir(out) / "done"}
    for folder in {(out / t.relpath).parent for t in tasks} | work:
        remove_stale_temporaries(folder)
    done = finished_shards(out, [t.relpath for t in tasks])
    pending = [t for t in tasks if t.relpath not in done]
    ctx = WorkerContext(str(out), str(input_npy), class_names, policy, cfg.seed)

    result = BuildResult(status="built", shards_kept=len(done))
    t_write = time.perf_counter()
    # Unordered: a result is taken (and its bar step shown) as soon as any worker finishes.
    parallel = Parallel(n_jobs=cfg.jobs or os.cpu_count() or 1, batch_size=1,
                        return_as="generator_unordered")
    bar = tqdm(total=sum(len(t.rows) for t in pending), unit="img", desc="shards",
               disable=None, file=sys.stderr)
    with _backend(cfg), bar:
        for entry in parallel(delayed(write_task)(t, ctx) for t in pending):
            done[entry.path] = entry
            result.images_written += entry.samples
            result.bytes_written += (out / entry.path).stat().st_size
            result.shards_written += 1
            bar.update(entry.samples)
    result.write_seconds = time.perf_counter() - t_write
    _INPUT_CACHE.clear()  # with --jobs 1 the tasks ran here: unmap before .work is deleted

    split_summary = {
        "fractions": list(cfg.split),
        "seed": cfg.seed,
        "counts": {s: int(len(splits.get(s, []))) for s in fmt.SPLITS},
        "class_counts": {
            s: np.bincount(labels[splits.get(s, np.empty(0, np.int64))],
                           minlength=len(class_names)).tolist()
            for s in fmt.SPLITS
        },
    }
    manifest = fmt.make_manifest(
        class_names=class_names, image_shape=image_shape, epochs=cfg.epochs, seed=cfg.seed,
        shards=[done[t.relpath] for t in tasks],
        config=cfg.to_dict(), policy=policy.to_dict(), policy_hash=policy.hash,
        input={"path": cfg.input, "fingerprint": key["input_fingerprint"],
               "num_samples": num_samples, "skipped": skipped},
        split=split_summary, scan=scan_summary, frozenaug_version=builder.__version__,
    )
    write_json(out / fmt.MANIFEST_NAME, manifest)  # last: the build exists from here on
    shutil.rmtree(work_dir(out), ignore_errors=True)
    return result


def cmd_build(args: argparse.Namespace) -> int:
    cfg = load_build_config(args)
    r = run_build(cfg)
    if r.status == "up to date":
        print(f"{cfg.out}: up to date ({fmt.MANIFEST_NAME} matches this config and input)")
        return 0
    rate = r.images_written / r.write_seconds if r.write_seconds > 0 else 0.0
    kept = f", kept {r.shards_kept} finished shards" if r.shards_kept else ""
    print(
        f"wrote {r.images_written} images in {r.shards_written} shards{kept}: "
        f"{rate:,.0f} images/s, {r.bytes_written / 2**20:,.1f} MiB, "
        f"{r.write_seconds:.1f} s writing, {r.wall_seconds:.1f} s wall"
    )
    return 0
