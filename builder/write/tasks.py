"""The build's unit of work: one task writes one shard, in any worker process.

A sample's augmentation is seeded by ``sample_seed(seed, epoch, input_row)`` and a shard's mixing
by (seed, epoch, shard index), so the bytes depend on neither the worker count nor the order in
which tasks finish. Workers read their rows of ``.work/input.npy`` with ``pread`` instead of
receiving pickled arrays.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from frozenaug import format as fmt
from frozenaug.builder.augment.augmenter import Augmenter
from frozenaug.builder.augment.policy import Policy
from frozenaug.builder.config import BuildConfig
from frozenaug.builder.write.builddir import BuildDir
from frozenaug.builder.write.shards import write_shard
from frozenaug.common.errors import InputError
from frozenaug.common.seeds import batch_seed, sample_seed
from frozenaug.data.imagefile import read_rows

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

    build_dir: BuildDir  # absolute, so workers with another working directory find it
    class_names: list[str]
    policy: Policy
    seed: int
    encoding: str = fmt.RAW  # the build's; val/test shards take fmt.split_encoding of it


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
