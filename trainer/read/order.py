"""The order in which the reader reads an epoch: a pure function of the shard sizes, seed and
epoch (FFCV's traversal order), apart from the I/O."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from frozenaug.common.errors import brief


def epoch_order(
    shard_sizes: Sequence[int], block: int | Sequence[int], seed: int | None, epoch: int
) -> list[tuple[int, int, int]]:
    """The order in which the reader reads an epoch: ``(shard, start, stop)`` for every block of
    ``block`` consecutive samples (one HDF5 chunk, so each is one sequential read) of every
    shard, each exactly once; shuffled by ``(seed, epoch)``, or in manifest order for ``seed``
    None. ``block`` is one size for all shards, or one per shard. A pure function: equal
    arguments give equal orders, whatever was read before.
    """
    sizes = [int(n) for n in shard_sizes]
    per_shard = [int(block)] * len(sizes) if isinstance(block, int) else [int(b) for b in block]
    if len(per_shard) != len(sizes) or min(per_shard, default=1) < 1:
        raise ValueError(f"block {brief(block)}: need one size >= 1, or one per shard")
    blocks = [(i, a, min(a + b, n)) for i, (n, b) in enumerate(zip(sizes, per_shard, strict=True))
              for a in range(0, n, b)]
    if seed is None:
        return blocks
    rng = np.random.default_rng([seed, epoch])
    return [blocks[j] for j in rng.permutation(len(blocks))]
