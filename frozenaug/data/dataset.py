"""What a data set is once read: RGB uint8 images of one size, labels and class names, and
the rules for names, sizes and labels that every reader applies."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from frozenaug.common.errors import InputError, brief
from frozenaug.common.safeio import CONFIG_MAX_BYTES, read_text
from frozenaug.data.imagefile import ImageFile, iter_rows
from frozenaug.data.members import duplicates

DEFAULT_SIZE = (96, 96)


@dataclass
class Dataset:
    """A labelled image set: every image RGB uint8 of one size."""

    images: np.ndarray  # (N, H, W, 3) uint8 RGB: from load_dataset, a read-only memory map
    labels: np.ndarray  # (N,) int64 in 0..len(class_names)-1
    class_names: list[str]
    source: str
    ids: Sequence[str]  # npz: the row index; folders: the path relative to the root
    official_split: np.ndarray | None = None  # MedMNIST --medmnist-split: 'train'/'val'/'test'
    skipped: list[str] = field(default_factory=list)  # unreadable files left out (folders)
    store: ImageFile | None = None  # the file under ``images`` (``save_as`` names it)

    def __len__(self) -> int:
        return len(self.labels)


class RowIds(Sequence[str]):
    """The ids of an npz's rows, "0".."N-1", made on demand (not N strings in memory)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):  # type: ignore[no-untyped-def]
        if isinstance(i, slice):
            return [str(k) for k in range(self.n)[i]]
        return str(range(self.n)[i])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]


def parse_size(s: str | None) -> tuple[int, int]:
    """``None`` -> (96, 96); ``"64"`` -> (64, 64); ``"64x80"`` -> (64, 80) as (H, W)."""
    if s is None:
        return DEFAULT_SIZE
    parts = str(s).lower().replace("×", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise InputError(f"{brief(s)} is not N or HxW (e.g. 96 or 64x80)") from None
    if len(values) not in (1, 2) or not all(0 < v <= 8192 for v in values):
        raise InputError(f"{brief(s)} is not N or HxW with sides in 1..8192")
    return (values[0], values[-1])


def parse_classes(s: str | None) -> list[str] | None:
    """A comma-separated list, or a file with one class name per line (blank lines ignored)."""
    if s is None:
        return None
    if os.path.exists(s) and not os.path.isdir(s):  # a FIFO too: refused, not read as names
        try:
            text = read_text(s, CONFIG_MAX_BYTES, "class list")
            names = [line.strip() for line in text.splitlines()]
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"{s}: unreadable class list ({e})") from None
    else:
        names = [n.strip() for n in str(s).split(",")]
    names = [n for n in names if n]
    if not names:
        raise InputError(f"{brief(s)}: no class names")
    dup = duplicates(names)
    if dup:
        raise InputError(f"{brief(s)}: duplicate class name(s) {brief(', '.join(dup))}")
    return names


def fingerprint(ds: Dataset) -> str:
    """sha256 over the image bytes, labels and class names: equal data gives equal hex."""
    h = hashlib.sha256()
    h.update(json.dumps([list(ds.images.shape), list(ds.class_names)]).encode())
    h.update(np.ascontiguousarray(ds.labels, dtype="<i8").tobytes())
    for _, rows in iter_rows(ds.images):  # in row order, a chunk at a time
        h.update(np.ascontiguousarray(rows).data)  # a view where the rows are contiguous
    return h.hexdigest()


def check_class_names(names: list[str], where: str) -> list[str]:
    """Class names must be non-empty and distinct (for --classes, an npz, a run)."""
    empty = [i for i, n in enumerate(names) if not str(n).strip()]
    if empty:
        raise InputError(f"{where}: class name {empty[0]} is empty")
    dup = duplicates(names)
    if dup:
        raise InputError(f"{where}: duplicate class name(s) {brief(', '.join(map(repr, dup)))}")
    return list(names)


def check_classes(
    labels: np.ndarray, class_names: list[str] | None, where: str,
    max_classes: int | None = None,
) -> list[str]:
    """Labels must lie in 0..C-1 and every class must have at least one image, unless
    ``max_classes`` is given: then labels must lie below it and classes may be absent."""
    if len(labels) and labels.min() < 0:
        i = int(np.argmin(labels))
        raise InputError(f"{where}[{i}]: label {labels[i]} is negative")
    top = int(labels.max()) if len(labels) else -1
    limit = len(labels) if max_classes is None else max_classes
    if class_names is None and top >= limit:  # checked before any per-class list is made
        i = int(np.argmax(labels))
        what = (f"{len(labels)} images cannot fill classes 0..{top}" if max_classes is None
                else f"out of range 0..{max_classes - 1}")
        raise InputError(f"{where}[{i}]: label {top}: {what}")
    n_classes = len(class_names) if class_names is not None else top + 1
    over = labels >= n_classes
    if over.any():
        i = int(np.argmax(over))
        raise InputError(
            f"{where}[{i}]: label {labels[i]} out of range 0..{n_classes - 1} "
            f"({n_classes} class names)"
        )
    names = class_names if class_names is not None else [str(c) for c in range(n_classes)]
    counts = np.bincount(labels, minlength=n_classes)
    if max_classes is None and (counts == 0).any():
        c = int(np.argmin(counts))
        raise InputError(f"{where}: class {c} ({brief(names[c])}) has no images")
    return list(names)
