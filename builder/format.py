"""The shard format, defined once: the builder writes it, the trainer reads it.

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

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from builder.errors import InputError

FORMAT_NAME = "frozenaug-hdf5"
SCHEMA_VERSION = 2  # 2: the ``encoding`` (manifest field, shard attribute), encoded layout
READABLE_SCHEMA_VERSIONS = (1, 2)  # 1: every shard raw, no ``encoding`` anywhere
MANIFEST_NAME = "manifest.json"

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
        raise ValueError(f"must be {ENCODING_RULE}, got {text!r}")
    codec, sep, q = text.strip().lower().partition(":")
    if codec not in CODECS or (sep and codec in ("raw", "png")):
        raise ValueError(f"must be {ENCODING_RULE}, got {text!r}")
    if not sep:
        return Encoding("jpeg", DEFAULT_JPEG_QUALITY) if codec == "jpeg" else Encoding(codec)
    top = 101 if codec == "webp" else 100
    if not q.isdigit() or not 1 <= int(q) <= top:
        raise ValueError(f"quality must be an integer in 1..100, got {text!r} ({ENCODING_RULE})")
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
    if version not in READABLE_SCHEMA_VERSIONS or isinstance(version, bool):
        known = " and ".join(map(str, READABLE_SCHEMA_VERSIONS))
        raise InputError(
            f"{path}: schema version {version!r}, this frozenaug reads versions {known}; "
            "rebuild the shards with this version"
        )
    if version == 1 and "encoding" in raw:
        raise InputError(f"{path}: malformed manifest (schema version 1 has no encoding)")
    if version >= 2:
        try:
            if str(parse_encoding(raw.get("encoding"))) != raw.get("encoding"):
                raise ValueError(f"not in canonical spelling: {raw.get('encoding')!r}")
        except ValueError as e:
            raise InputError(f"{path}: malformed manifest (encoding {e})") from None
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


# --- checks: one place for what a reader may rely on ------------------------------------------


def sha256_file(path: str | os.PathLike, block: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes, as the manifest records it for each shard."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def manifest_problems(m: Manifest) -> list[str]:
    """What is wrong with the manifest as a whole: a shard path listed twice, or frozen epochs
    that are missing or differ in size (a Keras epoch of the reader is one frozen epoch, and its
    step count must not change from one epoch to the next)."""
    found = []
    paths = [s.path for s in m.shards]
    if len(set(paths)) != len(paths):
        found.append("manifest lists a shard path twice")
    sizes = [sum(s.samples for s in m.shards_of("train", e)) for e in range(m.epochs)]
    if not sizes or 0 in sizes or len(set(sizes)) != 1:
        found.append(f"train samples per frozen epoch 0..{m.epochs - 1} are {sizes}; "
                     "expected the same non-zero count in each")
    return found


def _attr(f: h5py.File, name: str) -> Any:
    got = f.attrs.get(name)
    got = got.decode() if isinstance(got, bytes) else got
    return got.item() if isinstance(got, np.generic) else got  # printed as 1, not np.int64(1)


def _attr_problems(f: h5py.File, entry: ShardEntry, m: Manifest) -> list[str]:
    want: dict[str, Any] = {
        ATTR_SCHEMA_VERSION: m.schema_version,
        ATTR_SPLIT: entry.split,
        ATTR_EPOCH: entry.epoch,
        ATTR_SHARD_INDEX: entry.index,
    }
    if m.schema_version >= 2:
        want[ATTR_ENCODING] = m.encoding_of(entry)
    if entry.split == "train" and "policy_hash" in m.raw:
        want[ATTR_POLICY_HASH] = m.raw["policy_hash"]
    found = [f"attribute {name} is {got!r}, manifest says {value!r}"
             for name, value in want.items() if (got := _attr(f, name)) is None or got != value]
    try:
        names = json.loads(f.attrs.get(ATTR_CLASS_NAMES, ""))
    except (TypeError, ValueError):
        names = None
    if names != m.class_names:
        found.append(f"attribute {ATTR_CLASS_NAMES} is {names!r}, manifest says "
                     f"{m.class_names!r}")
    return found


def _dataset_problems(f: h5py.File, entry: ShardEntry, m: Manifest) -> list[str]:
    n, c = entry.samples, m.num_classes
    encoded = m.encoding_of(entry) != RAW
    shapes: dict[str, tuple[int, ...] | None] = {DS_LABELS: (n,), DS_SOURCE_INDEX: (n,)}
    if encoded:  # the byte count is whatever the offsets say (checked below)
        shapes.update({DS_IMAGE_BYTES: None, DS_IMAGE_OFFSETS: (n + 1,)})
    else:
        shapes[DS_IMAGES] = (n, *m.image_shape)
    if entry.soft_labels:
        shapes[DS_SOFT_LABELS] = (n, c)
    found = [f"unexpected dataset {k!r}" for k in f if k not in shapes]
    for name, shape in shapes.items():
        ds, dtype = f.get(name), np.dtype(DATASET_DTYPES[name])
        if not isinstance(ds, h5py.Dataset):
            found.append(f"dataset {name!r} missing")
        elif ds.dtype != dtype or (ds.shape != shape if shape else ds.ndim != 1):
            want = shape if shape else "(bytes,)"
            found.append(f"dataset {name!r} is {ds.dtype} {ds.shape}, expected {dtype} {want}")
    if not found and encoded:
        off = f[DS_IMAGE_OFFSETS][()]
        if off[0] != 0 or np.any(np.diff(off) < 1) or off[-1] != len(f[DS_IMAGE_BYTES]):
            found.append(f"{DS_IMAGE_OFFSETS} are not 0, increasing, ending at the "
                         f"{len(f[DS_IMAGE_BYTES])} bytes of {DS_IMAGE_BYTES}")
    if found or not n:
        return found
    # Contents, small beside the images: the labels the reader turns into targets must be
    # the ones the manifest counted.
    labels = f[DS_LABELS][()]
    if labels.min() < 0 or labels.max() >= c:
        return [f"labels outside 0..{c - 1}"]
    counts = np.bincount(labels, minlength=c).tolist()
    if counts != entry.class_counts:
        found.append(f"class counts {counts} differ from the manifest's {entry.class_counts}")
    num_samples = (m.raw.get("input") or {}).get("num_samples")
    src = f[DS_SOURCE_INDEX][()]
    if src.min() < 0 or (num_samples is not None and src.max() >= num_samples):
        found.append(f"source_index outside 0..{'N' if num_samples is None else num_samples}-1")
    if entry.soft_labels:
        soft = f[DS_SOFT_LABELS][()]
        if not np.all(soft >= 0) or not np.allclose(soft.sum(1), 1.0, atol=1e-4):
            found.append("soft_labels rows are not distributions (negative or sum != 1)")
        elif not np.all(soft[np.arange(n), labels] >= soft.max(1)):
            found.append("labels are not the dominant class of soft_labels")
    return found


def problems(f: h5py.File, entry: ShardEntry, m: Manifest) -> list[str]:
    """Everything about an open shard that disagrees with its manifest entry (attributes,
    dataset names, dtypes and shapes, the image offsets of an encoded shard, label range and
    counts, source rows, soft labels), as short phrases; empty if it is fine. The bytes (sha256)
    and whether encoded images decode (``image_problems``) are ``checked_shard``'s business.

    Raises:
        OSError, KeyError, ValueError, TypeError: the file is damaged beyond reading.
    """
    return _attr_problems(f, entry, m) + _dataset_problems(f, entry, m)


def image_problems(f: h5py.File, entry: ShardEntry, m: Manifest) -> list[str]:
    """The images of an encoded shard that do not decode, or decode to another shape than the
    manifest's (every image is decoded: ~10,000 JPEGs of 96x96 a second); nothing for a raw
    shard, whose every byte is a pixel. Call after ``problems`` found nothing."""
    enc = m.encoding_of(entry)
    if enc == RAW or not entry.samples:
        return []
    from builder import codec  # cv2: only for a check that decodes

    data, off = f[DS_IMAGE_BYTES][()], f[DS_IMAGE_OFFSETS][()]
    out = np.empty((1, *m.image_shape), np.uint8)
    bad = []
    for i in range(entry.samples):
        try:
            codec.decode_into(data[off[i]:off[i + 1]], out[0], enc)
        except ValueError as e:
            bad.append((i, str(e)))
    if not bad:
        return []
    first = ", ".join(f"image {i} {why}" for i, why in bad[:3])
    more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
    return [f"{len(bad)} of {entry.samples} {enc} images unreadable: {first}{more}"]


@contextlib.contextmanager
def checked_shard(m: Manifest, entry: ShardEntry, *, checksum: bool = False,
                  decode: bool = False) -> Iterator[tuple[h5py.File | None, list[str]]]:
    """Open a shard and check it: yields (the open file, or None if it cannot be opened;
    everything wrong with it). With ``checksum`` its sha256 is compared too (one read of the
    whole file), which catches a changed image byte that no structural check sees; with
    ``decode`` every encoded image is decoded (``image_problems``)."""
    path = m.path_of(entry)
    if not path.is_file():
        yield None, ["shard listed in the manifest is missing"]
        return
    found = []
    if checksum and sha256_file(path) != entry.sha256:
        found.append(f"sha256 differs from the manifest's (the file's {path.stat().st_size} "
                     "bytes changed or were truncated)")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        yield None, [*found, f"unreadable or truncated HDF5 file ({e})"]
        return
    with f:
        try:
            found += problems(f, entry, m)
            if decode and not found:
                found += image_problems(f, entry, m)
        except (OSError, KeyError, ValueError, TypeError) as e:
            found.append(f"unreadable or truncated HDF5 file ({type(e).__name__}: {e})")
        yield f, found


@contextlib.contextmanager
def open_shard(m: Manifest, entry: ShardEntry, *, checksum: bool = False) -> Iterator[h5py.File]:
    """A shard open for reading, once ``checked_shard`` found nothing wrong with it.

    Raises:
        InputError: one line naming the shard and every problem found.
    """
    with checked_shard(m, entry, checksum=checksum) as (f, found):
        if f is None or found:
            raise InputError(f"{m.path_of(entry)}: {'; '.join(found)}")
        yield f
