"""Stream a build's shards into training: (uint8 images, float32 labels) batches.

Reads are contiguous, chunk-aligned slices only. h5py serialises every call behind one lock, and
a fancy-indexed read (``ds[sorted_idx]``) runs ~600 images/s where a contiguous slice runs
hundreds of thousands; so shuffling happens at two levels instead: the order of chunk-sized
blocks across all shards of an epoch (``epoch_order``, a pure function of the shard sizes, seed
and epoch), then a permutation inside a group of several blocks. The permutation costs no copy:
each block is read with one ``preadv`` whose destination rows are the permuted rows of the
group buffer (recycled by ``rawio.BufferPool`` once nothing refers to it). Only the current
frozen epoch's shards are open, so memory does not depend on K. Every shard is opened through
``frozenaug.format.open_shard``, the format's one check against the manifest (the block I/O:
read.blocks; the order: read.order).

Encoded shards (png, jpeg, webp) are read the same way, one ``preadv`` per block, of that block's
byte range of ``image_bytes``; a pool of threads (``decode_threads``, kept for the stream's life)
decodes them straight into the permuted destination rows, while this thread reads the next
block (``cv2.imdecode`` releases the GIL). A group is yielded once all its images are decoded.

Keras epoch ``e`` reads frozen epoch ``e mod K``; the shuffle is seeded by ``(seed, e)``, so a
second pass over the same frozen epoch comes in another order.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
from collections.abc import Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING

import numpy as np

from frozenaug import format as fmt
from frozenaug.common.errors import InputError, brief
from frozenaug.trainer.read import rawio
from frozenaug.trainer.read.blocks import (  # noqa: F401  (default_decode_threads: its API)
    BlockReader,
    OpenShard,
    default_decode_threads,
)
from frozenaug.trainer.read.order import epoch_order

if TYPE_CHECKING:
    import tensorflow as tf

Batch = tuple[np.ndarray, np.ndarray]

# 16 chunks of 64 images: each batch mixes samples of ~16 random places of the epoch, and a
# group buffer is ~28 MiB at 96x96 (a stream keeps at most BufferPool.keep free ones).
DEFAULT_BUFFER_BLOCKS = 16


class ShardStream:
    """Batches of one split of a build directory, for ``model.fit`` or a numpy loop.

    Args:
        build_dir_or_manifest: a build directory or an already loaded ``Manifest``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        batch_size: images per batch.
        shuffle: shuffle blocks and samples (train); ``False`` gives manifest order, every
            sample exactly once, deterministic (val/test).
        seed: with the epoch number, seeds the shuffle.
        soft_labels: use the shards' soft labels (MixUp/CutMix); ``None`` means use them where a
            shard has them, one-hot elsewhere; ``False`` always one-hot of the hard label.
        drop_remainder: drop each epoch's last, smaller batch.
        buffer_blocks: chunk-sized blocks permuted together (shuffle quality vs memory).
        validate: open every shard of the split once now and check it against the manifest,
            so a broken build fails before training rather than at epoch 7.
        verify: also compare every shard's sha256 with the manifest's now, which catches a
            changed byte inside the image data that no structural check sees; costs one read
            of the whole split (~40,000-60,000 images/s of 96x96, see docs/FAULTS.md).
        decode_threads: threads decoding the images of encoded shards (default
            ``default_decode_threads()``); unused for raw shards.

    Raises:
        InputError: a missing, unreadable, truncated or mismatching shard, or a split without
            shards.
    """

    def __init__(
        self,
        build_dir_or_manifest: str | os.PathLike | fmt.Manifest,
        split: str = "train",
        *,
        batch_size: int = 64,
        shuffle: bool = True,
        seed: int = 0,
        soft_labels: bool | None = None,
        drop_remainder: bool = False,
        buffer_blocks: int = DEFAULT_BUFFER_BLOCKS,
        validate: bool = True,
        verify: bool = False,
        decode_threads: int | None = None,
    ) -> None:
        if split not in fmt.SPLITS:
            raise ValueError(f"split must be one of {fmt.SPLITS}, got {brief(split)}")
        if batch_size < 1 or buffer_blocks < 1:
            raise ValueError("batch_size and buffer_blocks must be >= 1")
        if decode_threads is not None and decode_threads < 1:
            raise ValueError("decode_threads must be >= 1")
        self.decode_threads = decode_threads or default_decode_threads()
        m = build_dir_or_manifest
        self.manifest = m if isinstance(m, fmt.Manifest) else fmt.load_manifest(m)
        self.split = split
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_remainder = bool(drop_remainder)
        self.buffer_blocks = int(buffer_blocks)
        self.num_classes = self.manifest.num_classes
        self.class_names = list(self.manifest.class_names)
        self.image_shape = tuple(self.manifest.image_shape)
        where = self.manifest.root / fmt.MANIFEST_NAME

        if split == "train":
            problems = fmt.manifest_problems(self.manifest)
            if problems:
                raise InputError(f"{where}: {'; '.join(problems)}")
            self.epochs = self.manifest.epochs
            self._frozen = [self.manifest.shards_of("train", e) for e in range(self.epochs)]
        else:
            self.epochs = 1
            self._frozen = [self.manifest.shards_of(split)]
            if not self._frozen[0]:
                raise InputError(f"{where}: the build has no {split} shards")
        self.num_samples = sum(s.samples for s in self._frozen[0])
        has_soft = any(s.soft_labels for shards in self._frozen for s in shards)
        if soft_labels and not has_soft:
            raise InputError(f"{where}: soft labels requested but the {split} shards have none")
        self.soft_labels = has_soft if soft_labels is None else bool(soft_labels)
        self.io = BlockReader(self.manifest, self.soft_labels, self.decode_threads)
        steps = self.num_samples / self.batch_size
        self.steps_per_epoch = math.floor(steps) if self.drop_remainder else math.ceil(steps)
        if self.steps_per_epoch < 1:
            raise ValueError(f"{self.num_samples} {split} samples give no batch of {batch_size}")
        # Shared by every dataset and iter_numpy of this stream, so memory stays bounded however
        # often Keras makes a new iterator (TensorFlow keeps a from_generator's generator alive).
        self._buffers = rawio.BufferPool(self.image_shape)
        # Epochs whose reading a dataset() has started, in order (for logs and tests).
        self.epochs_read: list[int] = []
        if validate or verify:
            for shards in self._frozen:
                for entry in shards:
                    with fmt.open_shard(self.manifest, entry, checksum=verify):
                        pass

    # --- public -------------------------------------------------------------------------

    def element_spec(self) -> tuple[tf.TensorSpec, tf.TensorSpec]:
        """(images uint8 (b,H,W,3), labels float32 (b,C)); b is fixed only with drop_remainder."""
        import tensorflow as tf

        b = self.batch_size if self.drop_remainder else None
        return (
            tf.TensorSpec((b, *self.image_shape), tf.uint8),
            tf.TensorSpec((b, self.num_classes), tf.float32),
        )

    def dataset(self, initial_epoch: int = 0, *, repeat: bool = False) -> tf.data.Dataset:
        """A ``tf.data.Dataset`` of batches.

        Without ``repeat``: one epoch per iteration; the n-th time it is iterated it reads Keras
        epoch ``initial_epoch + n`` (Keras 3.15 ``fit`` starts it once per epoch; pass
        ``steps_per_epoch`` only together with ``repeat=True``). Under a ``tf.distribute``
        strategy scope Keras starts it one extra time to build the model, which shifts the
        frozen epochs by one: use ``repeat=True`` there.

        With ``repeat``: endless, epochs ``initial_epoch, initial_epoch + 1, ...`` back to back,
        each exactly ``steps_per_epoch`` batches; use with ``fit(steps_per_epoch=...)``. Every
        new iterator starts again at ``initial_epoch``, so this does not depend on how often
        Keras restarts its iterator.
        """
        import tensorflow as tf

        if repeat:

            def generate() -> Iterator[Batch]:
                for epoch in itertools.count(initial_epoch):
                    self.epochs_read.append(epoch)
                    yield from self._epoch_groups(epoch)

        else:
            counter = itertools.count(initial_epoch)

            def generate() -> Iterator[Batch]:
                epoch = next(counter)
                self.epochs_read.append(epoch)
                yield from self._epoch_groups(epoch)

        @tf.autograph.experimental.do_not_convert
        def split(x: tf.Tensor, y: tf.Tensor) -> tf.data.Dataset:
            # Per group, so a batch never spans two groups (nor two epochs): the batches are
            # exactly those of iter_numpy.
            return tf.data.Dataset.from_tensors((x, y)).rebatch(
                self.batch_size, drop_remainder=self.drop_remainder
            )

        # The generator hands over whole shuffled groups (~1000 images) and TensorFlow cuts
        # them into batches: one Python call per group instead of per batch keeps the GIL
        # free for the training loop (about 2.5x the images/s at batch 64).
        groups = tf.data.Dataset.from_generator(generate, output_signature=self._group_spec())
        ds = groups.prefetch(2).flat_map(split)
        if not repeat:
            # A known length gives Keras progress bars and a fixed steps count from epoch 1.
            ds = ds.apply(tf.data.experimental.assert_cardinality(self.steps_per_epoch))
        return ds.prefetch(tf.data.AUTOTUNE)

    def iter_numpy(self, epoch: int = 0) -> Iterator[Batch]:
        """The batches of Keras epoch ``epoch`` as numpy arrays (the same ones ``dataset``
        yields for that epoch)."""
        bs = self.batch_size
        for x, y in self._epoch_groups(epoch):
            for k in range(0, len(x), bs):
                yield x[k : k + bs], y[k : k + bs]

    def labels(self, epoch: int = 0) -> np.ndarray:
        """Hard labels (int32) of a frozen epoch (val/test: the split) in manifest order, the
        order ``shuffle=False`` yields."""
        return self._concat(fmt.DS_LABELS, epoch)

    def source_index(self, epoch: int = 0) -> np.ndarray:
        """Each sample's row in the builder's input data set, in manifest order."""
        return self._concat(fmt.DS_SOURCE_INDEX, epoch)

    def shards_of_epoch(self, epoch: int) -> list[fmt.ShardEntry]:
        """The shards Keras epoch ``epoch`` reads (those of frozen epoch ``epoch mod K``)."""
        return list(self._frozen[epoch % self.epochs])

    # --- reading ------------------------------------------------------------------------

    def _concat(self, name: str, epoch: int) -> np.ndarray:
        parts = []
        for entry in self.shards_of_epoch(epoch):
            with fmt.open_shard(self.manifest, entry) as f:
                parts.append(self.io.read(entry, lambda f=f: f[name][()]))
        return np.concatenate(parts)

    def _epoch_groups(self, epoch: int, sources: bool = False) -> Iterator[tuple[np.ndarray, ...]]:
        """Open this epoch's shards, read their blocks in ``epoch_order``, close the shards;
        yield groups of whole batches (only the epoch's last group may end with a smaller one).
        ``sources``: each group also carries its rows' source_index (x, y, src), for the
        multi-view reader (trainer/read/views.py)."""
        bs = self.batch_size
        with contextlib.ExitStack() as stack:
            shards = [self.io.open(stack, e, sources) for e in self.shards_of_epoch(epoch)]
            blocks = epoch_order([s.entry.samples for s in shards], [s.block for s in shards],
                                 self.seed if self.shuffle else None, epoch)
            # Inside a group, its own stream: the block order stays a function of its inputs.
            rng = np.random.default_rng([self.seed, epoch, 1]) if self.shuffle else None
            # A group: its blocks plus a carry of less than one batch from the one before.
            rows = min(self.num_samples, self.buffer_blocks * max(s.block for s in shards) + bs)
            carry_x = np.empty((0, *self.image_shape), np.uint8)
            carry_y = np.empty((0, self.num_classes), np.float32)
            carry_s = np.empty(0, np.int64)
            for g in range(0, len(blocks), self.buffer_blocks):
                group = blocks[g : g + self.buffer_blocks]
                last = g + self.buffer_blocks >= len(blocks)
                n = len(carry_x) + sum(b - a for _, a, b in group)
                x = self._buffers.take(rows)[:n]
                y = np.empty((n, self.num_classes), np.float32)
                src = np.empty(n, np.int64)
                # Where each image goes: a permutation of the group (shuffle), or in order.
                to = rng.permutation(n) if rng is not None else np.arange(n)
                c = len(carry_x)
                x[to[:c]], y[to[:c]], src[to[:c]] = carry_x, carry_y, carry_s
                pos = c
                decoding: list[tuple[OpenShard, Future]] = []
                for i, a, b in group:
                    s, dest = shards[i], to[pos : pos + b - a]
                    if s.image_offsets is not None:
                        decoding += self.io.decode_rows(s, a, b, x, dest)
                    else:
                        self.io.read_rows(s, a, b, x,
                                        np.s_[pos : pos + b - a] if rng is None else dest)
                    y[dest] = s.targets[a:b]
                    if sources:
                        src[dest] = s.source[a:b]
                    pos += b - a
                for s, done in decoding:
                    bad = done.result()
                    if bad is not None:
                        raise InputError(f"{self.manifest.path_of(s.entry)}: image {bad} of "
                                         f"{s.entry.samples} {self.io.why(s, bad)}")
                full = n if last and not self.drop_remainder else n - n % bs
                if full:
                    yield (x[:full], y[:full], src[:full]) if sources else (x[:full], y[:full])
                carry_x, carry_y, carry_s = x[full:], y[full:], src[full:]

    def _group_spec(self) -> tuple[tf.TensorSpec, tf.TensorSpec]:
        import tensorflow as tf

        return (
            tf.TensorSpec((None, *self.image_shape), tf.uint8),
            tf.TensorSpec((None, self.num_classes), tf.float32),
        )
