"""Raw chunk I/O for the shard reader: where each chunk lies in the file, and the aligned,
reusable buffers that blocks are read into (see trainer/stream.py)."""

from __future__ import annotations

import math
import os
import sys
import threading

import h5py
import numpy as np

# Most buffers one preadv may fill (POSIX guarantees 16, Linux allows 1024).
IOV_MAX = (
    max(16, min(1024, os.sysconf("SC_IOV_MAX")))
    if "SC_IOV_MAX" in getattr(os, "sysconf_names", {})
    else 16
)


class GroupBuffers:
    """Image buffers for groups, 64-byte aligned, reused once nothing refers to them.

    Aligned: TensorFlow then wraps a yielded array (and rebatches it) without copying it.
    Reused: a fresh 28 MiB buffer costs a page fault per 4 KiB on first write, about as much as
    the read itself. A buffer is reused only when its reference count shows that no view of it
    is alive (TensorFlow holds a reference for as long as a tensor aliases it), so what was
    yielded is never overwritten. Safe to share between iterators (threads)."""

    def __init__(self, image_shape: tuple[int, ...], keep: int = 8) -> None:
        self.image_shape = tuple(image_shape)
        self.keep = keep
        self.rows = 0
        self._raw: list[np.ndarray] = []
        self._lock = threading.Lock()
        probe = [np.empty(1)]
        self._idle = sys.getrefcount(probe[0])  # the count of an array only this list holds

    def take(self, rows: int) -> np.ndarray:
        """A (rows, *image_shape) uint8 buffer that nothing else refers to."""
        with self._lock:
            if rows > self.rows:  # larger groups than before: start over with bigger buffers
                self.rows, self._raw = rows, []
            for i in range(len(self._raw)):
                if sys.getrefcount(self._raw[i]) <= self._idle:
                    return self._aligned(self._raw[i], rows)
            raw = np.empty(self.rows * math.prod(self.image_shape) + 64, np.uint8)
            if len(self._raw) < self.keep:
                self._raw.append(raw)
            return self._aligned(raw, rows)

    def _aligned(self, raw: np.ndarray, rows: int) -> np.ndarray:
        start = -raw.ctypes.data % 64
        size = rows * math.prod(self.image_shape)
        return raw[start : start + size].reshape(rows, *self.image_shape)


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
