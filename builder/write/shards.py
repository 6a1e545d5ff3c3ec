"""Write one shard (see frozenaug/format) atomically and describe it for the manifest.

Disk full: HDF5 copes badly with a failed write (a RuntimeError from deep in its cache, noise on
stderr, in repeated failures even a crash), so free space is checked before HDF5 touches the
disk, and an ENOSPC/EDQUOT that still happens (another process filled the disk meanwhile)
becomes a one-line ``InputError``; either way the temporary file is removed.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import h5py
import numpy as np

from frozenaug import format as fmt
from frozenaug.common.atomic import atomic_path
from frozenaug.common.disk import check_free_space, free_bytes, human_size
from frozenaug.common.errors import InputError
from frozenaug.format import sha256_file

# HDF5's own bytes in a shard (superblock, object headers, chunk index, attributes): ~5 KiB
# measured for 2048 images; the margin also covers the file system's block rounding.
SHARD_OVERHEAD_BYTES = 64 * 1024
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def shard_bytes_estimate(n: int, image_shape: tuple[int, ...], num_classes: int,
                         soft_labels: bool, image_bytes: int | None = None) -> int:
    """An upper estimate of a shard's file size (data plus HDF5's overhead). ``image_bytes``:
    the stored bytes of one image, default its raw pixels (``frozenaug.format.codec.bytes_estimate``
    gives it for an encoding); an encoded image also has its 8-byte offset."""
    per_image = (int(np.prod(image_shape)) if image_bytes is None else image_bytes + 8)
    per_image += 4 + 8 + (4 * num_classes if soft_labels else 0)
    return n * per_image + SHARD_OVERHEAD_BYTES


def _is_disk_full(e: BaseException) -> bool:
    # HDF5 reports a failed write as OSError or RuntimeError whose text carries the errno.
    if getattr(e, "errno", None) in _DISK_FULL:
        return True
    text = str(e)
    return any(f"errno = {n}," in text for n in _DISK_FULL) or "No space left" in text


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
    encoding: str = fmt.RAW,
) -> fmt.ShardEntry:
    """Write a shard under a temporary name, then rename it into place. ``encoding``
    (canonical, see ``format.manifest.parse_encoding``) is how the images are stored; the caller
    picks it per split (``frozenaug.format.manifest.split_encoding``).

    The file's bytes depend only on the arguments (no timestamps), so equal inputs give equal
    sha256 whichever process writes them.
    """
    n = len(images)
    if images.dtype != np.dtype(fmt.IMAGE_DTYPE) or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (n,H,W,3) uint8, got {images.shape} {images.dtype}")
    if len(labels) != n or len(source_index) != n:
        raise ValueError("images, labels and source_index must have the same length")
    if soft_labels is not None and soft_labels.shape != (n, len(class_names)):
        raise ValueError(f"soft_labels must be ({n}, {len(class_names)}), got {soft_labels.shape}")
    encoding = str(fmt.parse_encoding(encoding))
    encoded = None
    if encoding != fmt.RAW:
        from frozenaug.format.codec import encode_images  # cv2: only for an encoded shard

        encoded = encode_images(images, encoding)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Encoded, the size is known exactly now, before HDF5 touches the disk.
    needed = shard_bytes_estimate(n, images.shape[1:], len(class_names), soft_labels is not None,
                                  None if encoded is None else -(-len(encoded[0]) // max(n, 1)))
    check_free_space(path.parent, needed, str(path))
    try:
        digest = _write(path, images, labels, source_index, soft_labels, class_names=class_names,
                        split=split, shard_index=shard_index, epoch=epoch,
                        policy_hash=policy_hash, encoding=encoding, encoded=encoded)
    except (OSError, RuntimeError) as e:
        if not _is_disk_full(e):
            raise
        raise InputError(
            f"{path}: disk full while writing this shard (needs about {human_size(needed)}, "
            f"{human_size(free_bytes(path.parent))} free now in {path.parent}); free some space "
            "and run the same command again to resume"
        ) from None
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


def _write(path: Path, images: np.ndarray, labels: np.ndarray, source_index: np.ndarray,
           soft_labels: np.ndarray | None, *, class_names: list[str], split: str,
           shard_index: int, epoch: int, policy_hash: str, encoding: str,
           encoded: tuple[np.ndarray, np.ndarray] | None) -> str:
    """The HDF5 file under a temporary name, renamed into place; returns its sha256."""
    n = len(images)
    with atomic_path(path) as tmp:
        # libver pinned and times untracked: HDF5 then writes the same bytes for the same data.
        with h5py.File(tmp, "w", libver=("earliest", "v110"), track_order=False) as f:
            # Each dataset is flushed at once: HDF5 allocates a chunk's file space when the
            # dataset is closed, and a thread holding frames (dask's profiler) can delay that
            # close and so move the chunk, changing the file's bytes.
            if encoded is None:
                chunk = (max(1, min(n, fmt.CHUNK_IMAGES)), *images.shape[1:])
                f.create_dataset(
                    fmt.DS_IMAGES, data=images, chunks=chunk if n else None, track_times=False
                ).id.flush()
            else:  # contiguous: a block of rows is one byte range at a known file offset
                f.create_dataset(fmt.DS_IMAGE_BYTES, data=encoded[0], track_times=False
                                 ).id.flush()
                f.create_dataset(fmt.DS_IMAGE_OFFSETS, data=encoded[1], track_times=False
                                 ).id.flush()
            f.create_dataset(
                fmt.DS_LABELS, data=labels.astype(fmt.LABEL_DTYPE), track_times=False
            ).id.flush()
            f.create_dataset(
                fmt.DS_SOURCE_INDEX,
                data=source_index.astype(fmt.SOURCE_INDEX_DTYPE),
                track_times=False,
            ).id.flush()
            if soft_labels is not None:
                f.create_dataset(
                    fmt.DS_SOFT_LABELS,
                    data=soft_labels.astype(fmt.SOFT_LABEL_DTYPE),
                    track_times=False,
                ).id.flush()
            f.attrs[fmt.ATTR_SCHEMA_VERSION] = fmt.SCHEMA_VERSION
            f.attrs[fmt.ATTR_CLASS_NAMES] = json.dumps(list(class_names))
            f.attrs[fmt.ATTR_SPLIT] = split
            f.attrs[fmt.ATTR_EPOCH] = int(epoch)
            f.attrs[fmt.ATTR_SHARD_INDEX] = int(shard_index)
            f.attrs[fmt.ATTR_POLICY_HASH] = policy_hash
            f.attrs[fmt.ATTR_ENCODING] = encoding
        return sha256_file(tmp)
