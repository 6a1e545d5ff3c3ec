"""Every random draw of a build derives from (seed, epoch, row or shard): a hash, so the
draws are equal in every process and whatever the number of workers."""

from __future__ import annotations

import hashlib
import struct


def _hash_int(tag: bytes, *values: int) -> int:
    try:
        packed = struct.pack(f"<{len(values)}q", *values)
    except struct.error:
        raise ValueError(f"seed values must fit in int64, got {values}") from None
    digest = hashlib.blake2b(tag + packed, digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # < 2**63: fits an int64 column


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The per-sample seed for ``Augmenter.augment``: a hash, so neighbours are unrelated."""
    return _hash_int(b"frozenaug-sample", seed, epoch, index)


def batch_seed(seed: int, epoch: int, shard_index: int) -> int:
    """The seed for one shard's batch stage (``Augmenter.mix``); a different hash tag keeps it
    apart from the sample seeds."""
    return _hash_int(b"frozenaug-batch", seed, epoch, shard_index)
