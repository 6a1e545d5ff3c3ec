"""A build's shards read block by block: raw chunks with one ``preadv`` straight into the
destination rows, encoded ones as one byte range per block decoded by a pool of threads; every
shard opened through the format's one check (``open_shard``), every failure one line naming it.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from frozenaug import format as fmt
from frozenaug.common.errors import InputError
from frozenaug.trainer.read import rawio


def default_decode_threads() -> int:
    """Threads that decode encoded shards: up to 4, at most one per core."""
    return max(1, min(4, os.cpu_count() or 1))


@dataclass
class OpenShard:
    """One open shard and what reading its blocks needs."""

    entry: fmt.ShardEntry
    images: h5py.Dataset | None  # raw shards
    targets: np.ndarray  # (n, C) float32: soft labels or one-hot
    block: int  # images per chunk: reads start on multiples of it
    fd: int  # the same file, for raw chunk reads
    offsets: list[int] | None  # file offset of each chunk when chunks are plain bytes
    encoding: str = fmt.RAW
    image_offsets: np.ndarray | None = None  # encoded: (n+1,) int64, into image_bytes
    bytes_at: int | None = None  # encoded: file offset of image_bytes (None: read via h5py)
    image_bytes: h5py.Dataset | None = None
    source: np.ndarray | None = None  # source_index, read only when asked (views.py)


class BlockReader:
    """Block I/O of one build's shards, for a stream (and the multi-view reader).

    Args:
        manifest: the build's manifest.
        soft_labels: read the shards' soft labels where they have them, else one-hot labels.
        decode_threads: threads decoding encoded shards (a pool made on the first block).
    """

    def __init__(self, manifest: fmt.Manifest, soft_labels: bool, decode_threads: int) -> None:
        self.manifest, self.soft_labels, self.decode_threads = manifest, soft_labels, decode_threads
        self.num_classes = manifest.num_classes
        self.image_shape = tuple(manifest.image_shape)
        self._pool: ThreadPoolExecutor | None = None

    def open(self, stack: contextlib.ExitStack, entry: fmt.ShardEntry,
              sources: bool = False) -> OpenShard:
        f = stack.enter_context(fmt.open_shard(self.manifest, entry))
        source = self.read(entry, lambda: f[fmt.DS_SOURCE_INDEX][()]) if sources else None
        encoding = self.manifest.encoding_of(entry)
        images = f[fmt.DS_IMAGES] if encoding == fmt.RAW else None
        if self.soft_labels and entry.soft_labels:
            targets = self.read(entry, lambda: f[fmt.DS_SOFT_LABELS][()]).astype(np.float32)
        else:  # labels are in 0..C-1: open_shard checked them
            hard = self.read(entry, lambda: f[fmt.DS_LABELS][()])
            targets = np.eye(self.num_classes, dtype=np.float32)[hard]
        fd = os.open(self.manifest.path_of(entry), os.O_RDONLY)
        stack.callback(os.close, fd)
        if images is None:  # encoded: blocks of CHUNK_IMAGES rows, each one byte range
            data = f[fmt.DS_IMAGE_BYTES]
            offsets = self.read(entry, lambda: f[fmt.DS_IMAGE_OFFSETS][()])
            return OpenShard(entry, None, targets, fmt.CHUNK_IMAGES, fd, None, encoding,
                              offsets, rawio.contiguous_offset(data), data, source)
        block = max(1, int(images.chunks[0] if images.chunks else fmt.CHUNK_IMAGES))
        return OpenShard(entry, images, targets, block, fd, rawio.raw_chunk_offsets(images),
                          source=source)

    def pool(self) -> ThreadPoolExecutor:
        """The threads that decode encoded blocks, made on first use, shared by every reader of
        the stream (the multi-view reader too)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.decode_threads, thread_name_prefix="decode")
            weakref.finalize(self, self._pool.shutdown, wait=False)
        return self._pool

    def decode_rows(self, s: OpenShard, a: int, b: int, x: np.ndarray,
                     dest: np.ndarray) -> list[tuple[OpenShard, Future]]:
        """Read rows a:b of an encoded shard (one byte range) and hand their decoding into
        ``x[dest]`` to the pool, in one task per thread; returns (shard, future of
        ``codec.decode_rows``) per task."""
        from frozenaug.format import codec

        assert s.image_offsets is not None
        lo, hi = int(s.image_offsets[a]), int(s.image_offsets[b])
        data = np.empty(hi - lo, np.uint8)
        if s.bytes_at is not None:
            if self.read(s.entry, os.preadv, s.fd, [data], s.bytes_at + lo) != hi - lo:
                path = self.manifest.path_of(s.entry)
                raise InputError(f"{path}: truncated shard (short read of images {a}..{b})")
        else:
            data = self.read(s.entry, lambda: s.image_bytes[lo:hi])
        step = -(-(b - a) // self.decode_threads)
        tasks = []
        for r in range(a, b, step):
            rows = range(r, min(r + step, b))
            sub = data[int(s.image_offsets[r]) - lo:]
            tasks.append((s, self.pool().submit(codec.decode_rows, sub, s.image_offsets,
                                                   rows, x, dest[r - a:], s.encoding)))
        return tasks

    def why(self, s: OpenShard, row: int) -> str:
        """What is wrong with one image of an encoded shard (decoded again, for the message)."""
        from frozenaug.format import codec

        assert s.image_offsets is not None and s.image_bytes is not None
        lo, hi = int(s.image_offsets[row]), int(s.image_offsets[row + 1])
        try:
            codec.decode_into(self.read(s.entry, lambda: s.image_bytes[lo:hi]),
                              np.empty(self.image_shape, np.uint8), s.encoding)
        except ValueError as e:
            return str(e)
        return f"does not decode as {s.encoding}"

    def read_rows(
        self, s: OpenShard, a: int, b: int, x: np.ndarray, dest: slice | np.ndarray
    ) -> None:
        """Rows a:b of a shard's images (a chunk-aligned block) into ``x[dest]``: a slice, or
        the destination row of each image.

        Uncompressed chunks are plain C-order bytes at a known offset: one preadv straight into
        the destination rows, which (unlike h5py) releases the GIL and skips h5py's global lock,
        so the training loop keeps running meanwhile. Anything else goes through h5py."""
        if s.offsets is None:
            if isinstance(dest, slice):
                self.read(s.entry, s.images.read_direct, x, np.s_[a:b], dest)
            else:
                x[dest] = self.read(s.entry, lambda: s.images[a:b])
            return
        out = [x[dest]] if isinstance(dest, slice) else [x[r] for r in dest.tolist()]
        offset = s.offsets[a // s.block]
        for k in range(0, len(out), rawio.IOV_MAX):
            part = out[k : k + rawio.IOV_MAX]
            want = (b - a if isinstance(dest, slice) else len(part)) * x.strides[0]
            if self.read(s.entry, os.preadv, s.fd, part, offset) != want:
                path = self.manifest.path_of(s.entry)
                raise InputError(f"{path}: truncated shard (short read of images {a}..{b})")
            offset += want

    def read(self, entry: fmt.ShardEntry, read: Callable[..., Any], *args: Any) -> Any:
        """Run one h5py read; a damaged file becomes an InputError naming the shard."""
        try:
            return read(*args)
        except OSError as e:
            path = self.manifest.path_of(entry)
            raise InputError(f"{path}: shard data unreadable ({e})") from None
