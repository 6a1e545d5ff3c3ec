"""The shard format, defined once: the builder writes it, the trainer reads it.

A build directory holds ``manifest.json`` and HDF5 shards; the manifest is written last and is
the only way in (readers never glob). See docs/FORMAT.md for the user-facing description.

Each shard ``<split>/...h5`` holds:

* ``images``       uint8  (n, H, W, 3), RGB, chunked in blocks of ``CHUNK_IMAGES`` whole images,
                   uncompressed (these images barely compress and gzip/lzf slow reads 3-15x)
* ``labels``       int32  (n,), the class index (for a mixed sample: the class with most mass)
* ``soft_labels``  float32 (n, C), only in shards whose policy mixes samples (MixUp/CutMix)
* ``source_index`` int64  (n,), the sample's row in the input data set

and the attributes named ``ATTR_*`` below.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.errors import InputError

FORMAT_NAME = "frozenaug-hdf5"
SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"

SPLITS = ("train", "val", "test")

DS_IMAGES = "images"
DS_LABELS = "labels"
DS_SOFT_LABELS = "soft_labels"
DS_SOURCE_INDEX = "source_index"

ATTR_SCHEMA_VERSION = "schema_version"
ATTR_CLASS_NAMES = "class_names"  # JSON list of strings
ATTR_SPLIT = "split"
ATTR_EPOCH = "epoch"  # frozen epoch for train shards, -1 for val/test
ATTR_SHARD_INDEX = "shard_index"
ATTR_POLICY_HASH = "policy_hash"

IMAGE_DTYPE = "uint8"
LABEL_DTYPE = "int32"
SOFT_LABEL_DTYPE = "float32"
SOURCE_INDEX_DTYPE = "int64"

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


@dataclass(frozen=True)
class ShardEntry:
    """One shard as the manifest lists it."""

    path: str
    split: str
    epoch: int
    index: int
    samples: int
    class_counts: list[int]
    sha256: str
    soft_labels: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "split": self.split,
            "epoch": self.epoch,
            "index": self.index,
            "samples": self.samples,
            "class_counts": list(self.class_counts),
            "sha256": self.sha256,
            "soft_labels": self.soft_labels,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardEntry:
        return cls(
            path=str(d["path"]),
            split=str(d["split"]),
            epoch=int(d["epoch"]),
            index=int(d["index"]),
            samples=int(d["samples"]),
            class_counts=[int(c) for c in d["class_counts"]],
            sha256=str(d["sha256"]),
            soft_labels=bool(d["soft_labels"]),
        )


@dataclass
class Manifest:
    """The parsed ``manifest.json`` of a build directory."""

    root: Path
    class_names: list[str]
    image_shape: tuple[int, int, int]
    epochs: int
    seed: int
    shards: list[ShardEntry]
    raw: dict[str, Any] = field(repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def shards_of(self, split: str, epoch: int | None = None) -> list[ShardEntry]:
        """The shards of one split (and, for train, one frozen epoch), in manifest order."""
        return [
            s for s in self.shards if s.split == split and (epoch is None or s.epoch == epoch)
        ]

    def class_counts(self, split: str = "train") -> list[int]:
        """Per-class sample counts of a split; for train, of one frozen epoch (epoch 0)."""
        shards = self.shards_of(split, 0 if split == "train" else None)
        counts = [0] * self.num_classes
        for s in shards:
            counts = [a + b for a, b in zip(counts, s.class_counts, strict=True)]
        return counts

    def path_of(self, shard: ShardEntry) -> Path:
        return self.root / shard.path


def load_manifest(build_dir: str | os.PathLike) -> Manifest:
    """Read and check a build directory's manifest; refuse anything not written by this format.

    Raises:
        InputError: the directory or manifest is missing, unreadable, or of another format or
            schema version.
    """
    root = Path(build_dir)
    path = root / MANIFEST_NAME
    if not root.is_dir():
        raise InputError(f"{root}: not a build directory (no such folder)")
    if not path.is_file():
        raise InputError(f"{path}: missing; {root} is not a finished frozenaug build")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
        raise InputError(f"{path}: not a {FORMAT_NAME} manifest")
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise InputError(
            f"{path}: schema version {version!r}, this frozenaug reads version {SCHEMA_VERSION}; "
            "rebuild the shards with this version"
        )
    try:
        return Manifest(
            root=root,
            class_names=[str(c) for c in raw["class_names"]],
            image_shape=tuple(int(v) for v in raw["image_shape"]),  # type: ignore[arg-type]
            epochs=int(raw["epochs"]),
            seed=int(raw["seed"]),
            shards=[ShardEntry.from_dict(s) for s in raw["shards"]],
            raw=raw,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path}: malformed manifest ({type(e).__name__}: {e})") from None


def make_manifest(
    *,
    class_names: list[str],
    image_shape: tuple[int, int, int],
    epochs: int,
    seed: int,
    shards: list[ShardEntry],
    **extra: Any,
) -> dict[str, Any]:
    """The manifest as a JSON-ready dict: the fields readers rely on plus builder ``extra``
    (config, policy, input fingerprint, split and scan summaries). Nothing in it may depend on
    time, worker count or output path, so equal builds give byte-equal manifests."""
    core = {
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
        "class_names": list(class_names),
        "image_shape": [int(v) for v in image_shape],
        "epochs": int(epochs),
        "seed": int(seed),
        "shards": [s.to_dict() for s in shards],
    }
    clash = set(core) & set(extra)
    if clash:
        raise ValueError(f"extra manifest keys clash with core keys: {sorted(clash)}")
    return {**core, **extra}
