"""The one check of a shard against its manifest entry, and opening a shard only if it passes."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from frozenaug.common.errors import InputError, brief
from frozenaug.common.safeparse import parse_json
from frozenaug.format.manifest import FINISH_DIR, Manifest, ShardEntry
from frozenaug.format.schema import (
    ATTR_CLASS_NAMES,
    ATTR_ENCODING,
    ATTR_EPOCH,
    ATTR_POLICY_HASH,
    ATTR_SCHEMA_VERSION,
    ATTR_SHARD_INDEX,
    ATTR_SPLIT,
    DATASET_DTYPES,
    DS_IMAGE_BYTES,
    DS_IMAGE_OFFSETS,
    DS_IMAGES,
    DS_LABELS,
    DS_SOFT_LABELS,
    DS_SOURCE_INDEX,
    MANIFEST_NAME,
    RAW,
)


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
    found = [f"attribute {name} is {brief(got)}, manifest says {brief(value)}"
             for name, value in want.items() if (got := _attr(f, name)) is None or got != value]
    try:
        names = parse_json(f.attrs.get(ATTR_CLASS_NAMES, ""))
    except (TypeError, ValueError):
        names = None
    if names != m.class_names:
        found.append(f"attribute {ATTR_CLASS_NAMES} is {brief(names)}, manifest says "
                     f"{brief(m.class_names)}")
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
    found = [f"unexpected dataset {brief(k)}" for k in f if k not in shapes]
    for name, shape in shapes.items():
        ds, dtype = f.get(name), np.dtype(DATASET_DTYPES[name])
        if not isinstance(ds, h5py.Dataset):
            found.append(f"dataset {brief(name)} missing")
        elif ds.dtype != dtype or (ds.shape != shape if shape else ds.ndim != 1):
            want = shape if shape else "(bytes,)"
            found.append(f"dataset {brief(name)} is {ds.dtype} {ds.shape}, expected {dtype} {want}")
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
    from frozenaug.format import codec  # cv2: only for a check that decodes

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


def finish_matches(root: str | os.PathLike, record: Any) -> bool:
    """The finishing build a manifest's ``finish`` record names is in ``root`` as recorded
    (its manifest's sha256)."""
    manifest = Path(root) / FINISH_DIR / MANIFEST_NAME
    return (isinstance(record, dict) and manifest.is_file()
            and sha256_file(manifest) == record.get("manifest_sha256"))
