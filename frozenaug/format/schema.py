"""The shard format's names and rules: dataset and attribute names, dtypes, encodings, paths.

Both sides import these; nothing here touches a file. See docs/FORMAT.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from frozenaug.common.errors import brief

FORMAT_NAME = "frozenaug-hdf5"
SCHEMA_VERSION = 2  # 2: the ``encoding`` (manifest field, shard attribute), encoded layout
READABLE_SCHEMA_VERSIONS = (1, 2)  # 1: every shard raw, no ``encoding`` anywhere
MANIFEST_NAME = "manifest.json"
SPLIT_NAME = "split.json"  # the rows of each split, written by the clean step into the build

SPLITS = ("train", "val", "test")

DS_IMAGES = "images"
DS_LABELS = "labels"
DS_SOFT_LABELS = "soft_labels"
DS_SOURCE_INDEX = "source_index"
DS_IMAGE_BYTES = "image_bytes"
DS_IMAGE_OFFSETS = "image_offsets"

ATTR_SCHEMA_VERSION = "schema_version"
ATTR_CLASS_NAMES = "class_names"  # JSON list of strings
ATTR_SPLIT = "split"
ATTR_EPOCH = "epoch"  # frozen epoch for train shards, -1 for val/test
ATTR_SHARD_INDEX = "shard_index"
ATTR_POLICY_HASH = "policy_hash"
ATTR_ENCODING = "encoding"  # schema 2: the shard's canonical encoding ("raw", "jpeg:95", ...)

IMAGE_DTYPE = "uint8"
LABEL_DTYPE = "int32"
SOFT_LABEL_DTYPE = "float32"
SOURCE_INDEX_DTYPE = "int64"
IMAGE_BYTES_DTYPE = "uint8"
IMAGE_OFFSETS_DTYPE = "int64"
DATASET_DTYPES = {
    DS_IMAGES: IMAGE_DTYPE,
    DS_LABELS: LABEL_DTYPE,
    DS_SOURCE_INDEX: SOURCE_INDEX_DTYPE,
    DS_SOFT_LABELS: SOFT_LABEL_DTYPE,
    DS_IMAGE_BYTES: IMAGE_BYTES_DTYPE,
    DS_IMAGE_OFFSETS: IMAGE_OFFSETS_DTYPE,
}

# --- encodings ----------------------------------------------------------------------------
# Canonical spellings: "raw", "png", "jpeg:Q" (Q 1..100), "webp" (lossless), "webp:Q" (Q 1..100,
# lossy). "jpeg" alone means "jpeg:95"; "webp:101" is cv2's own spelling of lossless, read as
# "webp". Lossy ones apply to train shards only (``split_encoding``).
RAW = "raw"
CODECS = ("raw", "png", "jpeg", "webp")
DEFAULT_JPEG_QUALITY = 95
ENCODING_RULE = "raw, png, jpeg, jpeg:Q, webp (lossless) or webp:Q, Q an integer in 1..100"


@dataclass(frozen=True)
class Encoding:
    """A parsed encoding: the codec and its quality (None for raw, png and lossless webp)."""

    codec: str
    quality: int | None = None

    @property
    def lossless(self) -> bool:
        return self.quality is None

    def __str__(self) -> str:
        return self.codec if self.quality is None else f"{self.codec}:{self.quality}"


def parse_encoding(text: Any) -> Encoding:
    """``text`` as an Encoding; ``str()`` of it is the canonical spelling.

    Raises:
        ValueError: not one of ``ENCODING_RULE``.
    """
    if not isinstance(text, str):
        raise ValueError(f"must be {ENCODING_RULE}, got {brief(text)}")
    codec, sep, q = text.strip().lower().partition(":")
    if codec not in CODECS or (sep and codec in ("raw", "png")):
        raise ValueError(f"must be {ENCODING_RULE}, got {brief(text)}")
    if not sep:
        return Encoding("jpeg", DEFAULT_JPEG_QUALITY) if codec == "jpeg" else Encoding(codec)
    top = 101 if codec == "webp" else 100
    if not q.isdigit() or not 1 <= int(q) <= top:
        raise ValueError(f"quality must be an integer in 1..100, got {brief(text)} "
                         f"({ENCODING_RULE})")
    return Encoding(codec) if int(q) == 101 else Encoding(codec, int(q))


def split_encoding(encoding: str | Encoding, split: str) -> str:
    """The canonical encoding of a split's shards in a build encoded ``encoding``: train shards
    take it as given; val and test take it only if it is lossless, else stay raw, so that
    evaluation always sees the input's exact pixels."""
    enc = encoding if isinstance(encoding, Encoding) else parse_encoding(encoding)
    return str(enc) if split == "train" or enc.lossless else RAW


# 64 images of 96x96x3 are a 1.7 MiB chunk: large enough that a chunk-aligned slice is one
# sequential read, small enough that a shuffle can pick among many chunks.
CHUNK_IMAGES = 64
# 2048 images of 96x96x3 are ~54 MiB a shard: a few shards per epoch for parallel writing and
# cross-shard shuffling, few enough files that opening them costs nothing.
DEFAULT_SHARD_SIZE = 2048


def shard_relpath(split: str, shard_index: int, epoch: int = -1) -> str:
    """Where a shard lives inside the build directory (POSIX separators, as in the manifest)."""
    if split == "train":
        return f"train/epoch-{epoch:03d}/shard-{shard_index:05d}.h5"
    return f"{split}/shard-{shard_index:05d}.h5"

