"""The manifest: the one way into a build (readers never glob), parsed into typed fields.

A build directory holds ``manifest.json`` and HDF5 shards; the manifest is written last and is
the only way in (readers never glob). See docs/FORMAT.md for the user-facing description.

Each shard ``<split>/...h5`` holds the images in one of two layouts, by its ``encoding``:

* raw: ``images``  uint8  (n, H, W, 3), RGB, chunked in blocks of ``CHUNK_IMAGES`` whole images,
                   uncompressed (these images barely compress and gzip/lzf slow reads 3-15x)
* encoded (png, jpeg:Q, webp, webp:Q; schema 2):
  ``image_bytes``   uint8 (total,), every image's encoded file (PNG, JPEG, WebP) back to back in
                    row order, contiguous in the file (a block of rows is one byte range: one
                    read, no chunk index)
  ``image_offsets`` int64 (n+1,), image i is ``image_bytes[offsets[i]:offsets[i+1]]``

(not an HDF5 variable-length dataset: h5py turns those into Python objects, one at a time,
behind its global lock) and, in both layouts:

* ``labels``       int32  (n,), the class index (for a mixed sample: the class with most mass)
* ``soft_labels``  float32 (n, C), only in shards whose policy mixes samples (MixUp/CutMix)
* ``source_index`` int64  (n,), the sample's row in the input data set

and the attributes named ``ATTR_*`` below. ``problems`` is the one check of a shard against its
manifest entry: the verifier reports what it finds, the reader and the preview refuse to read a
shard it finds anything wrong with (``open_shard``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frozenaug.common.errors import InputError, brief
from frozenaug.common.safeio import DATA_JSON_MAX_BYTES, read_bytes
from frozenaug.common.safeparse import parse_json, read_json
from frozenaug.format.paths import path_problem
from frozenaug.format.schema import (
    FORMAT_NAME,
    MANIFEST_NAME,
    RAW,
    READABLE_SCHEMA_VERSIONS,
    SCHEMA_VERSION,
    SPLIT_NAME,
    parse_encoding,
    split_encoding,
)


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
        return dataclasses.asdict(self)

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


# Where ``build --finish`` writes its finishing build: an ordinary build inside the build.
FINISH_DIR = "finish"


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

    @property
    def schema_version(self) -> int:
        return int(self.raw["schema_version"])

    @property
    def encoding(self) -> str:
        """The build's encoding (canonical; ``"raw"`` for a schema-1 build)."""
        return str(self.raw.get("encoding", RAW))

    def encoding_of(self, shard: ShardEntry) -> str:
        """How this shard's images are stored (``split_encoding`` of the build's)."""
        return split_encoding(self.encoding, shard.split)

    # The trainer reads these builder-written fields only through the accessors below.

    def split_counts(self, split: str) -> list[int]:
        """Per-class counts of a split as the builder's split made it: real images, before
        any augmentation or MixUp/CutMix (the shards' own counts are argmaxes of soft labels);
        the shards' counts for a build that does not record them."""
        counts = self.raw.get("split", {}).get("class_counts", {}).get(split)
        if isinstance(counts, list) and len(counts) == self.num_classes:
            return [int(c) for c in counts]
        return self.class_counts(split)

    @property
    def policy_mix(self) -> dict[str, Any] | None:
        """The policy's MixUp/CutMix stage as written in the manifest, or None."""
        mix = self.raw.get("policy", {}).get("mix")
        return mix if isinstance(mix, dict) else None

    @property
    def finish(self) -> dict[str, Any] | None:
        """The finishing build written inside this one (``build --finish``: ``dir``,
        ``policy``, ``epochs``, ``manifest_sha256``), or None."""
        f = self.raw.get("finish")
        return f if isinstance(f, dict) and f.get("dir") == FINISH_DIR else None

    @property
    def finish_dir(self) -> Path | None:
        """The folder of the finishing build, or None when the build has none."""
        return self.root / FINISH_DIR if self.finish else None

    def split_identity(self) -> tuple[str, Any]:
        """The input fingerprint and the rows of each split (the build's split.json): two
        builds with equal identities hold the same images in the same splits."""
        return read_split_identity(self.root)


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
        raw = parse_json(read_bytes(path, DATA_JSON_MAX_BYTES, "manifest"))
    except (OSError, ValueError) as e:  # ValueError: not JSON or UTF-8, nested too deeply
        raise InputError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
        raise InputError(f"{path}: not a {FORMAT_NAME} manifest")
    version = raw.get("schema_version")
    if version not in READABLE_SCHEMA_VERSIONS or isinstance(version, bool):
        known = " and ".join(map(str, READABLE_SCHEMA_VERSIONS))
        raise InputError(
            f"{path}: schema version {brief(version)}, this frozenaug reads versions {known}; "
            "rebuild the shards with this version"
        )
    if version == 1 and "encoding" in raw:
        raise InputError(f"{path}: malformed manifest (schema version 1 has no encoding)")
    if version >= 2:
        try:
            if str(parse_encoding(raw.get("encoding"))) != raw.get("encoding"):
                raise ValueError(f"not in canonical spelling: {brief(raw.get('encoding'))}")
        except ValueError as e:
            raise InputError(f"{path}: malformed manifest (encoding {e})") from None
    try:
        manifest = Manifest(
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
    for s in manifest.shards:  # every reader comes through here: none opens a file outside
        problem = path_problem(root, s.path, s.split)
        if problem is not None:
            raise InputError(f"{path}: malformed manifest ({problem})")
    return manifest


def make_manifest(
    *,
    class_names: list[str],
    image_shape: tuple[int, int, int],
    epochs: int,
    seed: int,
    shards: list[ShardEntry],
    encoding: str = RAW,
    **extra: Any,
) -> dict[str, Any]:
    """The manifest as a JSON-ready dict: the fields readers rely on plus builder ``extra``
    (config, policy, input fingerprint, split and scan summaries). Nothing in it may depend on
    time, worker count or output path, so equal builds give byte-equal manifests. ``encoding``
    is the train shards' (see ``split_encoding`` for val/test)."""
    core = {
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
        "encoding": str(parse_encoding(encoding)),
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


def read_split_identity(build_dir: str | os.PathLike) -> tuple[str, Any]:
    """``Manifest.split_identity`` of a build folder, read from its split.json alone."""
    path = Path(build_dir) / SPLIT_NAME
    try:
        split = read_json(path, "split file")
        return str(split["input_fingerprint"]), split["splits"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: unreadable split ({type(e).__name__}: {e})") from None
