"""``frozenaug-build build``: load, clean, split, then write K frozen augmented epochs as shards.

Every shard is one task for a joblib worker. A sample's augmentation is seeded by
``sample_seed(seed, epoch, input_row)`` and a shard's mixing by (seed, epoch, shard index), so
the bytes depend on neither the worker count nor the order in which tasks finish. Workers read
the input from ``.work/input.npy`` by memory map instead of receiving pickled arrays.

A killed build resumes; ``write.builddir`` keeps the plan, the finished-shard markers and the
refusal rules. ``manifest.json`` is written last, after which ``.work`` is removed.

``--backend dask --scheduler ADDRESS`` runs the shard tasks on a dask.distributed cluster
(joblib's dask backend) instead of local processes. The workers open ``DIR/.work/input.npy``
and write the shards and done markers under ``DIR`` themselves, by absolute path, so ``--out
DIR`` must be on storage that every worker mounts at the same path (NFS, a cluster file
system). The scheduler is contacted before anything is read or written: if it cannot be reached
within ``SCHEDULER_TIMEOUT_S``, or has no worker, the build fails (exit 2) and leaves nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Parallel, delayed, parallel_config
from tqdm import tqdm

from frozenaug import format as fmt
from frozenaug.builder.augment.policy import Augmenter, Policy, load_policy
from frozenaug.builder.clean.cleaning import clean_dataset
from frozenaug.builder.config import BuildConfig
from frozenaug.builder.write.builddir import FRESH, UP_TO_DATE, BuildDir, build_key
from frozenaug.builder.write.shards import shard_bytes_estimate, write_shard
from frozenaug.common.disk import check_free_space
from frozenaug.common.errors import InputError
from frozenaug.common.libversions import library_versions
from frozenaug.common.lock import build_lock
from frozenaug.common.seeds import batch_seed, sample_seed
from frozenaug.common.version import VERSION
from frozenaug.data.imagefile import read_rows
from frozenaug.data.intake import fingerprint, load_dataset

# A stream of the seed for the train shuffle, apart from policy's sample and batch seeds.
_SHUFFLE_STREAM = 1
# Seconds to connect to a --scheduler, and again to wait for its first worker.
SCHEDULER_TIMEOUT_S = 10.0


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

    build_dir: BuildDir  # absolute, so workers with another working directory find it
    class_names: list[str]
    policy: Policy
    seed: int
    encoding: str = fmt.RAW  # the build's; val/test shards take fmt.split_encoding of it


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

    def cut(split: str, epoch: int, rows: np.ndarray) -> list[Task]:
        return [Task(split, epoch, i, r, labels[r])
                for i, r in enumerate(rows[s : s + cfg.shard_size]
                                      for s in range(0, len(rows), cfg.shard_size))]

    tasks = []
    train = np.asarray(splits.get("train", []), dtype=np.int64)
    for epoch in range(cfg.epochs):
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, epoch, _SHUFFLE_STREAM]))
        tasks += cut("train", epoch, train[rng.permutation(len(train))])
    for split in ("val", "test"):
        tasks += cut(split, -1, np.asarray(splits.get(split, []), dtype=np.int64))
    return tasks


# Per worker process: the memory-mapped input and the built augmenter, reused across tasks.
# The input is keyed by path, inode, mtime and size: a reused worker never reads a replaced file.
# An Augmenter reseeds itself per sample, so each thread needs its own (dask workers may run
# several tasks at once in one process; loky workers have one thread).
_INPUT_CACHE: dict[tuple, np.ndarray] = {}
_THREAD = threading.local()


def _input_images(path: Path) -> np.ndarray:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(
            f"{path}: not found on host {socket.gethostname()}; with --backend dask, --out must "
            "be on storage that every worker shares, at the same path"
        ) from None
    key = (str(path), st.st_ino, st.st_mtime_ns, st.st_size)
    images = _INPUT_CACHE.get(key)
    if images is None:
        images = np.load(path, mmap_mode="r")
        _INPUT_CACHE.clear()
        _INPUT_CACHE[key] = images
    return images


def release_worker_state() -> None:
    """Unmap the input, so that removing ``.work`` frees it (and leaves no NFS ``.nfs*`` file)."""
    _INPUT_CACHE.clear()


def _augmenter(policy: Policy, policy_hash: str | None = None) -> Augmenter:
    """This thread's Augmenter of ``policy``. Pass ``policy_hash`` if it is known: computing
    ``Policy.hash`` serialises the whole pipeline (~1 ms for the heavy preset)."""
    key = policy_hash or policy.hash
    cache = _THREAD.__dict__.setdefault("augmenters", {})
    if key not in cache:
        cache[key] = Augmenter(policy)
    return cache[key]


def write_task(task: Task, ctx: WorkerContext) -> fmt.ShardEntry:
    """Worker: augment (train only), mix if the policy mixes, write the shard, mark it done."""
    # Front to back, by pread: no page of the input stays in this worker's RSS.
    images = read_rows(_input_images(ctx.build_dir.input_npy), task.rows)
    labels, soft, policy_hash = task.labels, None, ""
    if task.split == "train":
        policy_hash = ctx.policy.hash
        seeds = [sample_seed(ctx.seed, task.epoch, int(r)) for r in task.rows]
        augmenter = _augmenter(ctx.policy, policy_hash)
        images = augmenter.augment_batch(images, seeds)
        images, soft = augmenter.mix(images, labels, len(ctx.class_names),
                                     batch_seed(ctx.seed, task.epoch, task.index))
        if soft is not None:
            labels = np.argmax(soft, axis=1)  # a mixed sample's label: its dominant class
    entry = write_shard(
        ctx.build_dir.root / task.relpath, images, labels, task.rows,
        class_names=ctx.class_names, split=task.split, shard_index=task.index,
        epoch=task.epoch, policy_hash=policy_hash, soft_labels=soft, relpath=task.relpath,
        encoding=fmt.split_encoding(ctx.encoding, task.split),
    )
    ctx.build_dir.mark_done(entry)
    return entry


def _scan_and_split(ds: Any, cfg: BuildConfig, bdir: BuildDir) -> tuple[dict, dict | None]:
    """Scan (unless ``--no-clean``), drop what it flags, split the rest with near-duplicates kept
    together (``clean_dataset``); or reuse the result a resumed build saved in ``.work``."""
    saved = bdir.load_clean()
    if saved is not None:
        return saved
    result = clean_dataset(
        ds, bdir.root, threshold=cfg.threshold, outlier_min=cfg.outlier_min, fractions=cfg.split,
        seed=cfg.seed, jobs=cfg.jobs, scan=cfg.clean,
        medmnist_split=cfg.medmnist_split,
    )
    splits = {k: np.asarray(v, dtype=np.int64) for k, v in result.splits.items()}
    # Through JSON now, so a fresh and a resumed build put identical summaries in the manifest.
    summary = json.loads(json.dumps(result.scan.summary())) if result.scan is not None else None
    bdir.save_clean(splits, summary)
    return splits, summary


def _probe(address: str, timeout: float) -> None:
    """Open one comm to the scheduler and hang up, on a private event loop in a thread.

    A ``Client`` whose constructor fails is left half-built, and closing it when it is garbage
    collected can hang or deadlock a later Client or LocalCluster in the same process; so an
    unreachable address is found here, before any Client exists.
    """
    from distributed.comm import connect

    async def hello() -> None:
        try:  # connect's own timeout does not cover the handshake: a silent port would hang
            comm = await asyncio.wait_for(connect(address, timeout=timeout), timeout * 1.5)
        except asyncio.TimeoutError:  # noqa: UP041 (on Python 3.10 not the builtin)
            raise TimeoutError(f"no dask handshake from {address} in {timeout:g} s") from None
        except (OSError, ValueError):
            raise
        except Exception as e:  # something else answered (e.g. HTTP): its bytes parse as junk
            raise OSError(f"{address} does not answer as a dask scheduler "
                          f"({type(e).__name__})") from None
        await comm.close()

    with ThreadPoolExecutor(1) as ex:  # asyncio.run needs a thread without a running loop
        ex.submit(asyncio.run, hello()).result()


@contextlib.contextmanager
def connect_scheduler(cfg: BuildConfig) -> Iterator[Any]:
    """For ``--backend dask``, a ``dask.distributed.Client`` of ``cfg.scheduler`` with at least
    one worker; ``None`` for loky. The client is closed (never the cluster) on the way out.

    Raises:
        InputError: dask is not installed, the address is malformed, the scheduler does not
            answer within ``SCHEDULER_TIMEOUT_S``, or it has no worker.
    """
    if cfg.backend != "dask":
        yield None
        return
    try:
        from dask.distributed import Client
    except ImportError:
        raise InputError(
            "--backend dask: needs dask.distributed (pip install 'frozenaug[dask]')"
        ) from None
    where = f"--scheduler {cfg.scheduler}"
    try:
        _probe(cfg.scheduler, SCHEDULER_TIMEOUT_S)
        client = Client(cfg.scheduler, timeout=SCHEDULER_TIMEOUT_S, set_as_default=False)
    except (OSError, ValueError) as e:  # OSError includes TimeoutError
        raise InputError(f"{where}: cannot reach a dask scheduler there ({e})") from None
    try:
        try:
            client.wait_for_workers(1, timeout=SCHEDULER_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError):  # noqa: UP041 (on Python 3.10 not the builtin)
            raise InputError(
                f"{where}: the scheduler has no workers (waited {SCHEDULER_TIMEOUT_S:g} s)"
            ) from None
        yield client
    finally:
        client.close()


def preflight(ds: Any, policy: Policy, cfg: BuildConfig) -> None:
    """What would fail late, checked before anything is written: the output is not the input
    nor inside it, a classifier has two classes, and the policy applies to these images.

    Raises:
        InputError: naming the output, the input or the policy file.
    """
    out, inp = Path(cfg.out).absolute().resolve(), Path(cfg.input).absolute().resolve()
    if out.exists() and not out.is_dir():
        raise InputError(f"{cfg.out}: exists and is not a folder")
    if out == inp or inp in out.parents:
        raise InputError(f"{cfg.out}: is the input {cfg.input} or inside it; choose an --out "
                         "outside the input")
    if len(ds.class_names) < 2:
        raise InputError(f"{cfg.input}: {len(ds.class_names)} class "
                         f"({', '.join(map(repr, ds.class_names))}); a classifier needs at "
                         "least 2")
    where = policy.source if policy.source not in ("", "preset") else f"--policy {cfg.policy}"
    images, labels = ds.images[:16], np.asarray(ds.labels[:16], np.int64)
    try:  # a few samples and one batch through the policy, as a worker will run them
        aug = Augmenter(policy)
        out_images = aug.augment_batch(images, [sample_seed(cfg.seed, 0, i)
                                                for i in range(len(images))])
        aug.mix(out_images, labels, len(ds.class_names), batch_seed(cfg.seed, 0, 0))
    except InputError:
        raise
    except Exception as e:  # albumentations raises many types for a transform that cannot apply
        shape = "x".join(map(str, images.shape[1:3]))
        raise InputError(f"{where}: cannot be applied to the {shape} images "
                         f"({type(e).__name__}: {e})") from None


def run_build(cfg: BuildConfig) -> BuildResult:
    """Build (or resume, or find up to date) the shards ``cfg`` describes."""
    t0 = time.perf_counter()
    bdir = BuildDir(Path(cfg.out))
    policy = load_policy(cfg.policy, cfg.drop_family)  # fail early on a bad policy
    with connect_scheduler(cfg) as client:  # and on a bad scheduler
        ds = load_dataset(
            cfg.input, size=tuple(cfg.size), class_names=cfg.classes, strict=cfg.strict,
            medmnist_split=cfg.medmnist_split, spill=cfg.out,  # mapped, on --out's disk
            max_pixels=cfg.max_image_pixels,
        )
        preflight(ds, policy, cfg)
        key = build_key(cfg, fingerprint(ds), policy.hash, VERSION)
        with build_lock(bdir.root):  # one build per folder; the kernel drops it if killed
            inputs = (cfg.input, *([cfg.policy] if Path(cfg.policy).is_file() else []))
            versions = library_versions()
            state = bdir.prepare(key, overwrite=bool(cfg.overwrite), inputs=inputs,
                                 versions=versions)
            if state == UP_TO_DATE:
                return BuildResult(status=UP_TO_DATE, wall_seconds=time.perf_counter() - t0)
            loaded = [ds]
            del ds  # _build drops the pixels once they are on disk; no frame here may keep them
            try:
                result = _build(cfg, bdir, loaded, policy, key, client)
            except InputError:
                if state == FRESH:  # bad input found late: leave no half-started build behind
                    bdir.discard()
                raise
    result.wall_seconds = time.perf_counter() - t0
    return result


def _build(cfg: BuildConfig, bdir: BuildDir, loaded: list, policy: Policy, key: dict,
           client: Any) -> BuildResult:
    ds = loaded.pop()
    class_names = list(ds.class_names)
    skipped = len(ds.skipped)
    labels = np.asarray(ds.labels, dtype=np.int64)
    image_shape = tuple(int(v) for v in ds.images.shape[1:])
    num_samples = len(labels)
    splits, scan_summary = _scan_and_split(ds, cfg, bdir)
    if not len(splits.get("train", [])):
        raise InputError(f"{cfg.input}: no training images left after cleaning and splitting")
    tasks = plan_tasks(splits, labels, cfg)
    bdir.remove_stale(t.relpath for t in tasks)
    done = bdir.finished_shards(t.relpath for t in tasks)
    pending = [t for t in tasks if t.relpath not in done]
    # Refuse a full disk now, not with a crashed worker later (HDF5 copes badly with ENOSPC).
    per_image = _image_bytes(ds.images, policy, cfg)
    needed = sum(shard_bytes_estimate(len(t.rows), image_shape, len(class_names),
                                      t.split == "train" and policy.mix is not None,
                                      per_image[t.split == "train"])
                 for t in pending)
    if not bdir.input_npy.is_file():
        needed += 0 if ds.store is not None and ds.store.linkable else ds.images.nbytes
    check_free_space(bdir.root, needed, str(bdir.root))
    bdir.write_input(ds.images, ds.store)  # the intake's file, linked in: no copy
    del ds  # workers read the memory map; the parent need not hold the pixels

    ctx = WorkerContext(BuildDir(bdir.root.absolute()), class_names, policy, cfg.seed,
                        cfg.encode)

    result = BuildResult(status="built", shards_kept=len(done))
    t_write = time.perf_counter()
    bar = tqdm(total=sum(len(t.rows) for t in pending), unit="img", desc="shards",
               disable=None, file=sys.stderr)
    backend = (parallel_config(backend="loky") if client is None
               else parallel_config(backend="dask", client=client))
    with backend, bar:
        # Made inside the backend's context, which Parallel reads when it is created.
        # Unordered: a result is taken (and its bar step shown) as soon as any worker finishes.
        parallel = Parallel(n_jobs=cfg.jobs or os.cpu_count() or 1, batch_size=1,
                            return_as="generator_unordered")
        for entry in parallel(delayed(write_task)(t, ctx) for t in pending):
            done[entry.path] = entry
            result.images_written += entry.samples
            result.bytes_written += (bdir.root / entry.path).stat().st_size
            result.shards_written += 1
            bar.update(entry.samples)
    result.write_seconds = time.perf_counter() - t_write
    release_worker_state()  # with --jobs 1 the tasks ran here: unmap before .work is deleted
    if client is not None:  # best effort: a worker that is gone holds no map
        with contextlib.suppress(OSError):
            client.run(release_worker_state, on_error="ignore")

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
    bdir.finish(fmt.make_manifest(
        class_names=class_names, image_shape=image_shape, epochs=cfg.epochs, seed=cfg.seed,
        shards=[done[t.relpath] for t in tasks],
        config=cfg.to_dict(), policy=policy.to_dict(), policy_hash=policy.hash,
        input={"path": cfg.input, "fingerprint": key["input_fingerprint"],
               "num_samples": num_samples, "skipped": skipped},
        split=split_summary, scan=scan_summary, frozenaug_version=VERSION,
        library_versions=library_versions(), encoding=cfg.encode,
    ))
    return result


def _image_bytes(images: np.ndarray, policy: Policy, cfg: BuildConfig) -> dict[bool, int | None]:
    """Stored bytes per image to plan disk space with, for {is train: bytes}; None is raw.
    Encoded, measured on a few images as they will be written (train ones augmented)."""
    from frozenaug.format.codec import bytes_estimate

    sample = np.asarray(images[:16])
    out: dict[bool, int | None] = {}
    for train in (True, False):
        enc = fmt.split_encoding(cfg.encode, "train" if train else "val")
        if enc == fmt.RAW:
            out[train] = None
            continue
        x = sample
        if train:
            x = Augmenter(policy).augment_batch(
                sample, [sample_seed(cfg.seed, 0, i) for i in range(len(sample))])
        out[train] = bytes_estimate(x, enc)
    return out
