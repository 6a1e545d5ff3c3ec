"""Raw chunk I/O for the shard reader: where each chunk lies in the file, and the aligned,
recycled buffers that blocks are read into (see trainer/read/stream.py)."""

from __future__ import annotations

import collections
import contextlib
import math
import os
import weakref

import h5py
import numpy as np

# Most buffers one preadv may fill (POSIX guarantees 16, Linux allows 1024).
IOV_MAX = (
    max(16, min(1024, os.sysconf("SC_IOV_MAX")))
    if "SC_IOV_MAX" in getattr(os, "sysconf_names", {})
    else 16
)


class BufferPool:
    """Image buffers for groups, 64-byte aligned, recycled once nothing can read them.

    Aligned: TensorFlow then wraps a yielded array (and slices batches out of it) without
    copying. Recycled: a fresh 28 MiB buffer costs a page fault per 4 KiB on first write, about
    as much as the read itself.

    Why reuse is safe: ``take`` wraps a block of raw memory in a new array whose base is a
    ``memoryview``, not an array, so numpy stops collapsing view bases there: every slice of it,
    and every tensor TensorFlow makes from one (TensorFlow keeps the numpy array it wraps),
    holds a reference to that array. The block goes back to the pool in the array's finalizer,
    that is when the last view or tensor is gone, whoever holds it and for however long (a
    ``list(stream.iter_numpy())`` too). Nothing here counts references or knows how deep
    TensorFlow prefetches. At most ``keep`` free blocks are kept; more in use at once are plain
    allocations. Safe to share between iterators (threads): the free list is a deque, whose
    append and pop are atomic, so a finalizer running in any thread needs no lock."""

    def __init__(self, image_shape: tuple[int, ...], keep: int = 8) -> None:
        self.image_shape = tuple(image_shape)
        self.keep = keep
        self.rows = 0  # rows of every block; grows (and drops smaller blocks) on demand
        self._free: collections.deque[np.ndarray] = collections.deque()

    def take(self, rows: int) -> np.ndarray:
        """A (rows, *image_shape) uint8 array that no other array or tensor shares memory with."""
        self.rows = max(self.rows, rows)
        size = self.rows * math.prod(self.image_shape) + 64
        raw = None
        with contextlib.suppress(IndexError):
            raw = self._free.pop()
        if raw is None or raw.size != size:  # none free, or one made for smaller groups
            raw = np.empty(size, np.uint8)
        start = -raw.ctypes.data % 64
        n = rows * math.prod(self.image_shape)
        block = np.frombuffer(memoryview(raw)[start : start + n], np.uint8)
        weakref.finalize(block, self._give_back, raw)
        return block.reshape(rows, *self.image_shape)

    def free_blocks(self) -> int:
        """Blocks that nothing refers to, ready for the next ``take``."""
        return len(self._free)

    def _give_back(self, raw: np.ndarray) -> None:
        if len(self._free) < self.keep and raw.size == self.rows * math.prod(self.image_shape) + 64:
            self._free.append(raw)


def raw_chunk_offsets(images: h5py.Dataset) -> list[int] | None:
    """File offset of each chunk if every chunk is whole images stored as plain bytes (no
    compression or other filter), else None."""
    c = images.chunks
    if not c or images.dtype != np.uint8 or tuple(c[1:]) != images.shape[1:]:
        return None
    if images.id.get_create_plist().get_nfilters():
        return None
    chunk_bytes = int(np.prod(c))
    offsets = []
    for a in range(0, images.shape[0], c[0]):
        info = images.id.get_chunk_info_by_coord((a,) + (0,) * (len(c) - 1))
        if info.byte_offset is None or info.filter_mask or info.size != chunk_bytes:
            return None
        offsets.append(int(info.byte_offset))
    return offsets


def contiguous_offset(ds: h5py.Dataset) -> int | None:
    """File offset of a dataset's bytes if it is stored contiguously (unchunked, unfiltered,
    allocated), else None: then any slice of it is one plain read at that offset."""
    if ds.chunks is not None or ds.dtype != np.uint8:
        return None
    offset = ds.id.get_offset()
    return None if offset is None else int(offset)
