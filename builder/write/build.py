"""``frozenaug-build build``: load, clean, split, then write K frozen augmented epochs as shards.

Every shard is one task (``write.tasks``) for a joblib worker, local processes or a Dask
cluster (``write.scheduler``); the bytes depend on neither the worker count nor the order in
which tasks finish. A killed build resumes; ``write.builddir`` keeps the plan, the
finished-shard markers and the refusal rules. ``manifest.json`` is written last, after which
``.work`` is removed. With Dask the workers open ``DIR/.work/input.npy`` and write the shards
and done markers under ``DIR`` themselves, by absolute path, so ``--out DIR`` must be on
storage that every worker mounts at the same path (NFS, a cluster file system).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Parallel, delayed, parallel_config
from tqdm import tqdm

from frozenaug import format as fmt
from frozenaug.builder.augment.augmenter import Augmenter
from frozenaug.builder.augment.policy import Policy, load_policy
from frozenaug.builder.clean.cleaning import clean_dataset
from frozenaug.builder.config import BuildConfig
from frozenaug.builder.write.builddir import FRESH, UP_TO_DATE, BuildDir, build_key
from frozenaug.builder.write.finish import check_finish_policy, write_finish
from frozenaug.builder.write.scheduler import connect_scheduler
from frozenaug.builder.write.shards import shard_bytes_estimate
from frozenaug.builder.write.tasks import (
    WorkerContext,
    plan_tasks,
    release_worker_state,
    write_task,
)
from frozenaug.common.atomic import write_bytes
from frozenaug.common.disk import check_free_space
from frozenaug.common.errors import InputError
from frozenaug.common.libversions import library_versions
from frozenaug.common.lock import build_lock, read_lock
from frozenaug.common.seeds import batch_seed, sample_seed
from frozenaug.common.version import VERSION
from frozenaug.data.intake import fingerprint, load_dataset


@dataclass
class BuildResult:
    status: str  # "built" or "up to date"
    images_written: int = 0
    bytes_written: int = 0
    shards_written: int = 0
    shards_kept: int = 0
    write_seconds: float = 0.0
    wall_seconds: float = 0.0
    finish: BuildResult | None = None  # the finishing build's (write.finish)


# A finishing build's given split: (splits, scan summary, the parent's split.json bytes).
Given = tuple[dict, "dict | None", bytes]


def _scan_and_split(ds: Any, cfg: BuildConfig, bdir: BuildDir,
                    given: Given | None = None) -> tuple[dict, dict | None]:
    """Scan (unless ``--no-clean``), drop what it flags, split the rest with near-duplicates kept
    together (``clean_dataset``); or reuse the result a resumed build saved in ``.work``, or
    the parent build's (``given``, for a finishing build: write.finish)."""
    if given is not None:
        splits, summary, split_json = given
        write_bytes(bdir.root / fmt.SPLIT_NAME, split_json)  # the parent's, byte for byte
        return splits, summary
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


def run_build(cfg: BuildConfig, *, clean: Given | None = None) -> BuildResult:
    """Build (or resume, or find up to date) the shards ``cfg`` describes, and its finishing
    build (``cfg.finish``, write.finish). ``clean``: the split to use instead of scanning and
    splitting (a finishing build gets its parent's)."""
    t0 = time.perf_counter()
    bdir = BuildDir(Path(cfg.out))
    policy = load_policy(cfg.policy, cfg.drop_family)  # fail early on a bad policy
    finish_policy = check_finish_policy(cfg)
    with connect_scheduler(cfg) as client:  # and on a bad scheduler
        ds = load_dataset(
            cfg.input, size=tuple(cfg.size), class_names=cfg.classes, strict=cfg.strict,
            medmnist_split=cfg.medmnist_split, spill=cfg.out,  # mapped, on --out's disk
            max_pixels=cfg.max_image_pixels,
        )
        preflight(ds, policy, cfg)
        key = build_key(cfg, fingerprint(ds), policy.hash, VERSION)
        if (bdir.root / fmt.MANIFEST_NAME).is_file():
            # Up to date writes nothing, so a shared lock may say so while fits read the build:
            # the same build command before each of several concurrent fits is not refused.
            with read_lock(bdir.root):
                if bdir.is_current(key):
                    bdir.clear_work()  # what a build killed after its manifest left
                    return BuildResult(status=UP_TO_DATE,
                                       wall_seconds=time.perf_counter() - t0)
        with build_lock(bdir.root):  # one build per folder; the kernel drops it if killed
            inputs = (cfg.input, *(p for p in (cfg.policy, finish_policy and finish_policy.source)
                                   if p and Path(p).is_file()))
            versions = library_versions()
            state = bdir.prepare(key, overwrite=bool(cfg.overwrite), inputs=inputs,
                                 versions=versions)
            if state == UP_TO_DATE:
                return BuildResult(status=UP_TO_DATE, wall_seconds=time.perf_counter() - t0)
            loaded = [ds]
            del ds  # _build drops the pixels once they are on disk; no frame here may keep them
            try:
                result = _build(cfg, bdir, loaded, policy, key, client, clean)
            except InputError:
                if state == FRESH:  # bad input found late: leave no half-started build behind
                    bdir.discard()
                raise
    result.wall_seconds = time.perf_counter() - t0
    return result


def _build(cfg: BuildConfig, bdir: BuildDir, loaded: list, policy: Policy, key: dict,
           client: Any, given: Given | None) -> BuildResult:
    ds = loaded.pop()
    class_names = list(ds.class_names)
    skipped = len(ds.skipped)
    labels = np.asarray(ds.labels, dtype=np.int64)
    image_shape = tuple(int(v) for v in ds.images.shape[1:])
    num_samples = len(labels)
    splits, scan_summary = _scan_and_split(ds, cfg, bdir, given)
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
    # Before this build's manifest: once it exists, so does the finishing build it names.
    finish = write_finish(cfg, bdir.root, (splits, scan_summary), key["input_fingerprint"],
                          run_build)
    bdir.finish(fmt.make_manifest(
        class_names=class_names, image_shape=image_shape, epochs=cfg.epochs, seed=cfg.seed,
        shards=[done[t.relpath] for t in tasks],
        config=cfg.to_dict(), policy=policy.to_dict(), policy_hash=policy.hash,
        input={"path": cfg.input, "fingerprint": key["input_fingerprint"],
               "num_samples": num_samples, "skipped": skipped},
        split=split_summary, scan=scan_summary, frozenaug_version=VERSION,
        library_versions=library_versions(), encoding=cfg.encode,
        **({"finish": finish[0]} if finish else {}),
    ))
    result.finish = finish[1] if finish else None
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
