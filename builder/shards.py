"""Write one shard (see builder/format.py) atomically and describe it for the manifest."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import h5py
import numpy as np

from builder import format as fmt
from builder.atomic import atomic_path


def sha256_file(path: str | os.PathLike, block: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def write_shard(
    path: str | os.PathLike,
    images: np.ndarray,
    labels: np.ndarray,
    source_index: np.ndarray,
    *,
    class_names: list[str],
    split: str,
    shard_index: int,
    epoch: int = -1,
    policy_hash: str = "",
    soft_labels: np.ndarray | None = None,
    relpath: str | None = None,
) -> fmt.ShardEntry:
    """Write a shard under a temporary name, then rename it into place.

    The file's bytes depend only on the arguments (no timestamps), so equal inputs give equal
    sha256 whichever process writes them.
    """
    n = len(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (n,H,W,3) uint8, got {images.shape} {images.dtype}")
    if len(labels) != n or len(source_index) != n:
        raise ValueError("images, labels and source_index must have the same length")
    if soft_labels is not None and soft_labels.shape != (n, len(class_names)):
        raise ValueError(f"soft_labels must be ({n}, {len(class_names)}), got {soft_labels.shape}")
    path = Path(path)
    with atomic_path(path) as tmp:
        # libver pinned and times untracked: HDF5 then writes the same bytes for the same data.
        with h5py.File(tmp, "w", libver=("earliest", "v110"), track_order=False) as f:
            chunk = (max(1, min(n, fmt.CHUNK_IMAGES)), *images.shape[1:])
            f.create_dataset(
                fmt.DS_IMAGES, data=images, chunks=chunk if n else None, track_times=False
            )
            f.create_dataset(
                fmt.DS_LABELS, data=labels.astype(fmt.LABEL_DTYPE), track_times=False
            )
            f.create_dataset(
                fmt.DS_SOURCE_INDEX,
                data=source_index.astype(fmt.SOURCE_INDEX_DTYPE),
                track_times=False,
            )
            if soft_labels is not None:
                f.create_dataset(
                    fmt.DS_SOFT_LABELS,
                    data=soft_labels.astype(fmt.SOFT_LABEL_DTYPE),
                    track_times=False,
                )
            f.attrs[fmt.ATTR_SCHEMA_VERSION] = fmt.SCHEMA_VERSION
            f.attrs[fmt.ATTR_CLASS_NAMES] = json.dumps(list(class_names))
            f.attrs[fmt.ATTR_SPLIT] = split
            f.attrs[fmt.ATTR_EPOCH] = int(epoch)
            f.attrs[fmt.ATTR_SHARD_INDEX] = int(shard_index)
            f.attrs[fmt.ATTR_POLICY_HASH] = policy_hash
        digest = sha256_file(tmp)
    counts = np.bincount(labels.astype(np.int64), minlength=len(class_names))
    return fmt.ShardEntry(
        path=relpath if relpath is not None else path.name,
        split=split,
        epoch=int(epoch),
        index=int(shard_index),
        samples=n,
        class_counts=[int(c) for c in counts],
        sha256=digest,
        soft_labels=soft_labels is not None,
    )
