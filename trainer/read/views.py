"""Several frozen views of each training image in one batch, for a consistency loss
(``fit --consistency``, trainer/train/consistency.py).

Every frozen epoch of a build holds another augmented view of the same train rows, so V views
of an image cost V reads and no augmentation. Keras epoch ``e`` reads its anchor view exactly
as ``ShardStream`` does (frozen epoch ``e mod K``, contiguous blocks, the same shuffle: every
train row once per epoch). The other V-1 views come from V-1 other frozen epochs, drawn per
Keras epoch from ``(seed, e)`` (``view_epochs``), so that which epochs pair up varies from
epoch to epoch. For each of them an index source_index -> (shard, row) is built when the epoch
starts, and each anchor row's partner is read on its own: raw shards store whole rows at known
offsets inside plain chunks, so that is one ``pread`` of one row (no h5py fancy indexing, which
runs ~600 images/s); encoded shards, one ``pread`` of the row's byte range, decoded by a pool
of threads. Only the V epochs in use are open and indexed: memory does not grow with K.

Labels are the anchor's. A build that froze MixUp/CutMix is refused: its views of one row are
mixed with different partners, so their labels differ and they are not views of one image that
a consistency term should pull together (build with ``--drop-family mix``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from frozenaug import format as fmt
from frozenaug.common.errors import InputError
from frozenaug.trainer.read import rawio
from frozenaug.trainer.read.blocks import OpenShard
from frozenaug.trainer.read.stream import ShardStream

if TYPE_CHECKING:
    import tensorflow as tf


class ViewStream:
    """Batches of ``views`` frozen views of each train row of ``stream``'s build.

    ``iter_numpy`` yields (images (b, V, H, W, 3) uint8, labels (b, C) float32); ``dataset``
    yields what a plain model trains on: images (b*V, H, W, 3) with the V views of a row
    adjacent (rows ``i*V .. i*V+V-1``, the anchor first) and the labels repeated V times.

    Raises:
        InputError: fewer frozen epochs than views, a build with frozen MixUp/CutMix, or a
            frozen epoch that lacks a row of another.
    """

    def __init__(self, stream: ShardStream, views: int) -> None:
        where = stream.manifest.root / fmt.MANIFEST_NAME
        if stream.split != "train" or not stream.shuffle:
            raise ValueError("views are read from a shuffled train stream")
        if views < 2:
            raise ValueError(f"views must be >= 2, got {views}")
        if stream.epochs < views:
            raise InputError(f"{where}: {views} views of each image need {views} frozen epochs, "
                             f"the build has {stream.epochs}; build it with --epochs {views} "
                             "or more")
        if stream.soft_labels:
            raise InputError(f"{where}: the build froze MixUp/CutMix (soft labels), so its views "
                             "of an image differ in content and label; build it with "
                             "--drop-family mix for consistency training")
        self.stream = stream
        self.views = int(views)
        self.steps_per_epoch = stream.steps_per_epoch
        self._buffers = rawio.BufferPool(stream.image_shape)

    def view_epochs(self, epoch: int) -> list[int]:
        """The frozen epochs of Keras epoch ``epoch``'s views: the anchor's ``epoch mod K``,
        then V-1 distinct others drawn from ``(seed, epoch)``."""
        k = self.stream.epochs
        anchor = epoch % k
        rng = np.random.default_rng([self.stream.seed, epoch, 2])
        steps = rng.choice(np.arange(1, k), self.views - 1, replace=False)
        return [anchor, *((anchor + int(s)) % k for s in steps)]

    def iter_numpy(self, epoch: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Keras epoch ``epoch``'s batches: (images (b, V, H, W, 3), anchor labels (b, C))."""
        bs = self.stream.batch_size
        for *xs, y in self._groups(epoch):
            for k in range(0, len(y), bs):
                yield np.stack([x[k : k + bs] for x in xs], axis=1), y[k : k + bs]

    def dataset(self, initial_epoch: int = 0, *, repeat: bool = False) -> tf.data.Dataset:
        """Batches for ``model.fit``: images (b*V, H, W, 3), views of a row adjacent, labels
        (b*V, C); as ``ShardStream.dataset`` (``repeat``: endless, for ``steps_per_epoch``)."""
        import tensorflow as tf

        s, v = self.stream, self.views
        counter = itertools.count(initial_epoch)

        def generate() -> Iterator[tuple[np.ndarray, ...]]:
            for epoch in itertools.count(initial_epoch) if repeat else [next(counter)]:
                yield from self._groups(epoch)

        @tf.autograph.experimental.do_not_convert
        def split(*group: tf.Tensor) -> tf.data.Dataset:
            return tf.data.Dataset.from_tensors(group).rebatch(
                s.batch_size, drop_remainder=s.drop_remainder)

        @tf.autograph.experimental.do_not_convert
        def interleave(*batch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            x = tf.reshape(tf.stack(batch[:-1], axis=1), (-1, *s.image_shape))
            return x, tf.repeat(batch[-1], v, axis=0)

        image = tf.TensorSpec((None, *s.image_shape), tf.uint8)
        spec = (*[image] * v, tf.TensorSpec((None, s.num_classes), tf.float32))
        ds = tf.data.Dataset.from_generator(generate, output_signature=spec).prefetch(2)
        ds = ds.flat_map(split).map(interleave)
        if not repeat:
            ds = ds.apply(tf.data.experimental.assert_cardinality(self.steps_per_epoch))
        return ds.prefetch(tf.data.AUTOTUNE)

    # --- reading ------------------------------------------------------------------------

    def _groups(self, epoch: int) -> Iterator[tuple[np.ndarray, ...]]:
        """(anchor images, the other views' images..., labels) per group of the anchor stream."""
        s = self.stream
        with contextlib.ExitStack() as stack:
            others = [_FrozenEpoch(s, f, stack) for f in self.view_epochs(epoch)[1:]]
            for x, y, src in s._epoch_groups(epoch, sources=True):
                views = []
                for other in others:
                    out = self._buffers.take(len(src))
                    other.read(src, y.argmax(axis=1), out, s.io.pool)
                    views.append(out)
                yield (x, *views, y)


class _FrozenEpoch:
    """One frozen epoch's shards, open, with the index source_index -> (shard, row)."""

    def __init__(self, stream: ShardStream, frozen: int, stack: contextlib.ExitStack) -> None:
        self.stream, self.frozen = stream, frozen
        self.shards = [stream.io.open(stack, e, sources=True)
                       for e in stream.shards_of_epoch(frozen)]
        src = np.concatenate([sh.source for sh in self.shards])
        self.order = np.argsort(src, kind="stable")
        self.sorted = src[self.order]
        self.shard_of = np.repeat(np.arange(len(self.shards)),
                                  [sh.entry.samples for sh in self.shards])
        self.row_of = np.concatenate([np.arange(sh.entry.samples) for sh in self.shards])
        self.row_bytes = int(np.prod(stream.image_shape))

    def read(self, src: np.ndarray, labels: np.ndarray, out: np.ndarray,
             pool: Callable[[], ThreadPoolExecutor]) -> None:
        """The rows of source indices ``src`` (hard labels ``labels``) into ``out``."""
        pos = np.minimum(np.searchsorted(self.sorted, src), len(self.sorted) - 1)
        missing = self.sorted[pos] != src
        at = self.order[pos]
        shard, row = self.shard_of[at], self.row_of[at]
        for i in np.unique(shard):
            sh = self.shards[i]
            k = np.flatnonzero(shard == i)
            wrong = missing[k] | (sh.targets[row[k]].argmax(axis=1) != labels[k])
            if wrong.any():
                j = int(src[k[np.argmax(wrong)]])
                raise InputError(f"{self.stream.manifest.path_of(sh.entry)}: source row {j} of "
                                 f"the anchor epoch has no row with its label in frozen epoch "
                                 f"{self.frozen}; the frozen epochs must be permutations of one "
                                 "train split (rebuild)")
            if sh.image_offsets is not None:
                self._decode(sh, row[k], out, k, pool)
            else:
                self._raw(sh, row[k], out, k)

    def _raw(self, sh: OpenShard, rows: np.ndarray, out: np.ndarray, dest: np.ndarray) -> None:
        """Whole rows: one pread each at its offset inside its plain chunk, in file order."""
        order = np.argsort(rows, kind="stable")
        if sh.offsets is None:  # filtered or odd chunks: h5py, one row at a time
            for r, d in zip(rows[order].tolist(), dest[order].tolist(), strict=True):
                out[d] = self.stream.io.read(sh.entry, lambda r=r: sh.images[r])
            return
        for r, d in zip(rows[order].tolist(), dest[order].tolist(), strict=True):
            offset = sh.offsets[r // sh.block] + (r % sh.block) * self.row_bytes
            if self.stream.io.read(sh.entry, os.preadv, sh.fd, [out[d]], offset) != self.row_bytes:
                raise InputError(f"{self.stream.manifest.path_of(sh.entry)}: truncated shard "
                                 f"(short read of image {r})")

    def _decode(self, sh: OpenShard, rows: np.ndarray, out: np.ndarray, dest: np.ndarray,
                pool: Callable[[], ThreadPoolExecutor]) -> None:
        """Encoded rows: their byte ranges read into one buffer, decoded by the pool."""
        from frozenaug.format import codec

        assert sh.image_offsets is not None
        lo, hi = sh.image_offsets[rows], sh.image_offsets[rows + 1]
        ends = np.concatenate([[0], np.cumsum(hi - lo)])
        data = np.empty(int(ends[-1]), np.uint8)
        for a, b, k0, k1 in zip(lo.tolist(), hi.tolist(), ends[:-1].tolist(), ends[1:].tolist(),
                                strict=True):
            if sh.bytes_at is not None:
                got = self.stream.io.read(sh.entry, os.preadv, sh.fd, [data[k0:k1]],
                                        sh.bytes_at + a)
                if got != b - a:
                    raise InputError(f"{self.stream.manifest.path_of(sh.entry)}: truncated "
                                     "shard (short read of an image)")
            else:
                data[k0:k1] = self.stream.io.read(sh.entry, lambda a=a, b=b: sh.image_bytes[a:b])
        threads = self.stream.decode_threads
        step = -(-len(rows) // threads)
        tasks = [(r, pool().submit(codec.decode_rows, data[int(ends[r]):], ends,
                                   range(r, min(r + step, len(rows))), out, dest[r:],
                                   sh.encoding))
                 for r in range(0, len(rows), step)]
        for _, done in tasks:
            bad = done.result()
            if bad is not None:
                r = int(rows[bad])
                raise InputError(f"{self.stream.manifest.path_of(sh.entry)}: image {r} of "
                                 f"{sh.entry.samples} {self.stream.io.why(sh, r)}")
