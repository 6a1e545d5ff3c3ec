"""Read a labelled image data set into a ``Dataset`` on disk, checking it on the way in.

Three layouts are detected from the path:

* a folder with one sub-folder per class (png/jpg/jpeg/bmp/tif/tiff files directly inside);
* an AN2DL-style ``.npz`` with ``images`` (N,H,W,3) uint8, or float in [0,1] or [0,255], and
  ``labels`` (N,), (N,1) or one-hot (N,C); an optional ``class_names`` key names the classes;
* a MedMNIST ``.npz`` (``train_images``, ``train_labels``, ``val_*``, ``test_*``), concatenated
  in train/val/test order; grayscale (N,H,W) is accepted.

Every image comes out RGB uint8 at ``size``; anything wrong raises a one-line ``InputError``
naming the file, key or index. The images are written, chunk by chunk, into an unnamed
memory-mapped file (``data.imagefile``), not held in memory: an input larger than RAM needs
only the disk space for it, and the intake's resident memory stays the same whatever the size.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import zipfile
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from frozenaug.common.errors import InputError, brief
from frozenaug.common.imageheaders import DEFAULT_MAX_IMAGE_PIXELS
from frozenaug.common.safeio import CONFIG_MAX_BYTES, read_text
from frozenaug.data.arrays import (
    NpzMember,
    check_image_array,
    check_memory,
    convert_images,
    read_labels,
)
from frozenaug.data.decode import read_image_file
from frozenaug.data.imagefile import ImageFile, iter_rows
from frozenaug.data.members import check_rows, duplicates, load_npz

# A file that does not decode is reported by the intake (skipped, or fatal with --strict), in
# one line naming it; OpenCV's own "[ WARN ] ... buffer is incomplete" lines would add noise.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

DEFAULT_SIZE = (96, 96)
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
MEDMNIST_SPLITS = ("train", "val", "test")
FOLDER_BATCH = 64  # files one thread decodes and writes at a time


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


def _check_classes(
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


# --- readers --------------------------------------------------------------------------------


def _load_npz(path: Path, size: tuple[int, int], class_names: list[str] | None,
              medmnist_split: bool, max_classes: int | None, spill: Path,
              max_pixels: int) -> Dataset:
    with open_npz(path) as z:
        return _read_npz(path, z, size, class_names, medmnist_split, max_classes, spill,
                         max_pixels)


def open_npz(path: Path) -> np.lib.npyio.NpzFile:
    """An npz archive opened without pickles; InputError naming the file if it is none (or
    not a regular file: a FIFO would block ``np.load``)."""
    try:
        z = load_npz(path)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise InputError(f"{path}: unreadable npz ({type(e).__name__}: {e})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise InputError(f"{path}: a single array (.npy?), expected an npz archive")
    return z


def _read_npz(path: Path, z: np.lib.npyio.NpzFile, size: tuple[int, int],
              class_names: list[str] | None, medmnist_split: bool,
              max_classes: int | None, spill: Path, max_pixels: int) -> Dataset:
    keys = set(z.files)

    def need(key: str) -> None:
        if key not in keys:
            raise InputError(f"{path}: missing key {brief(key)} (found: {', '.join(sorted(keys))})")

    def get(key: str) -> np.ndarray:
        need(key)
        member = NpzMember(z, key, path)  # its header is checked against the stored bytes
        if member.whole is not None:
            return member.whole
        try:
            return z[key]
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise InputError(f"{path}: key {brief(key)} unreadable ({type(e).__name__}: {e})"
                             ) from None

    def member(key: str) -> NpzMember:
        need(key)
        return NpzMember(z, key, path)

    official = None
    if "images" in keys:
        src = member("images")
        check_image_array(src, max_pixels)  # before the file is made
        store = ImageFile(src.shape[0], size, spill, str(path))
        convert_images(src, size, store, max_pixels=max_pixels)
        check_rows(member("labels"), len(store), f"{path}: labels")  # before reading them
        labels = read_labels(get("labels"), len(store), f"{path}: labels")
        if class_names is None and "class_names" in keys:
            check_rows(member("class_names"), None, f"{path}: class_names")
            stored = get("class_names")
            if stored.dtype.kind not in "US" or stored.ndim != 1:
                raise InputError(f"{path}: class_names must be a 1-D array of strings")
            class_names = check_class_names([str(c) for c in stored], f"{path}: class_names")
    elif "train_images" in keys:
        parts = [member(f"{split}_images") for split in MEDMNIST_SPLITS]
        for part in parts:
            check_image_array(part, max_pixels)
        store = ImageFile(sum(p.shape[0] for p in parts), size, spill, str(path))
        labs, names, start = [], [], 0
        for split, part in zip(MEDMNIST_SPLITS, parts, strict=True):
            n = part.shape[0]
            convert_images(part, size, store, start, max_pixels)  # in place, no concatenate
            check_rows(member(f"{split}_labels"), n, f"{path}: {split}_labels")
            labs.append(read_labels(get(f"{split}_labels"), n, f"{path}: {split}_labels"))
            names += [split] * n
            start += n
        labels = np.concatenate(labs)
        if medmnist_split:
            official = np.array(names)
    else:
        raise InputError(
            f"{path}: neither 'images' (AN2DL) nor 'train_images' (MedMNIST) in the npz "
            f"(found: {', '.join(sorted(keys)) or 'nothing'})"
        )
    if medmnist_split and official is None:
        raise InputError(f"{path}: --medmnist-split needs a MedMNIST npz (train_images, ...)")
    names = _check_classes(labels, class_names, f"{path}: labels", max_classes)
    return Dataset(store.array(), labels, names, str(path), RowIds(len(labels)), official,
                   store=store)


def read_image(path: Path, size: tuple[int, int],
               max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray | None:
    """One file as (H,W,3) RGB uint8 at ``size``, or None when it cannot be decoded; an
    InputError for a file that is not a regular one or states more than ``max_pixels``."""
    return read_image_file(path, size, max_pixels)


def _load_folders(root: Path, size: tuple[int, int], class_names: list[str] | None,
                  strict: bool, spill: Path, max_pixels: int) -> Dataset:
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InputError(f"{root}: no class sub-folders (expected one folder per class)")
    if class_names is not None:
        have, wanted = set(folders), set(class_names)  # sets: 100k names stay linear
        missing = [c for c in class_names if c not in have]
        extra = [f for f in folders if f not in wanted]
        if missing:
            raise InputError(f"{root}: no folder for class(es) {brief(', '.join(missing))}")
        if extra:
            raise InputError(f"{root}: folder(s) {brief(', '.join(extra))} not among the class "
                             "names")
        folders = list(class_names)
    files: list[tuple[Path, int]] = []
    for c, name in enumerate(folders):
        # Not is_file(): a broken or looping symlink must be listed as unreadable, not ignored.
        found = sorted(p for p in (root / name).iterdir()
                       if p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_dir())
        if not found:
            raise InputError(f"{root / name}: class {brief(name)} has no images")
        files += [(p, c) for p in found]

    store = ImageFile(len(files), size, spill, str(root))
    decoded = _read_files([p for p, _ in files], size, store, max_pixels)
    bad = [str(p) for (p, _), good in zip(files, decoded, strict=True) if not good]
    if bad and strict:
        raise InputError(f"{bad[0]}: unreadable image (--strict)")
    if bad:
        shown = "; ".join(bad[:10]) + (f"; and {len(bad) - 10} more" if len(bad) > 10 else "")
        print(f"warning: skipped {len(bad)} unreadable image(s) (--strict makes this an error): "
              f"{shown}", file=sys.stderr)
    ok = np.flatnonzero(decoded)
    labels = np.array([files[i][1] for i in ok], np.int64)
    if len(ok) == 0:
        raise InputError(f"{root}: no readable images")
    counts = np.bincount(labels, minlength=len(folders))
    if (counts == 0).any():
        name = folders[int(np.argmin(counts))]
        raise InputError(f"{root / name}: class {brief(name)} has no readable images")
    if len(ok) < len(files):
        store.keep_rows(ok)  # close the gaps of skipped files (rows move down, in order)
    ids = [files[i][0].relative_to(root).as_posix() for i in ok]
    return Dataset(store.array(), labels, list(folders), str(root), ids, None, bad, store)


def _read_files(files: list[Path], size: tuple[int, int], out: ImageFile,
                max_pixels: int) -> np.ndarray:
    """Decode ``files`` into rows 0.. of ``out`` in threads (cv2 drops the GIL), a batch of
    ``FOLDER_BATCH`` per task and a few tasks ahead, so memory does not grow with the count.
    Returns which files decoded; the rows of the others are left zero."""
    from tqdm import tqdm

    decoded = np.zeros(len(files), bool)

    def read(start: int) -> int:
        batch = np.zeros((min(FOLDER_BATCH, len(files) - start), *size, 3), np.uint8)
        for i in range(len(batch)):
            img = read_image(files[start + i], size, max_pixels)
            if img is not None:
                batch[i], decoded[start + i] = img, True
        out[start : start + len(batch)] = batch
        return len(batch)

    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as ex, \
            tqdm(total=len(files), desc="reading", unit="img", disable=None) as bar:
        pending: deque = deque()
        for start in range(0, len(files), FOLDER_BATCH):
            pending.append(ex.submit(read, start))
            if len(pending) >= 4 * workers:
                bar.update(pending.popleft().result())
        try:
            while pending:
                bar.update(pending.popleft().result())
        except BaseException:  # a refused file: stop at once, not after every queued batch
            ex.shutdown(cancel_futures=True)
            raise
    return decoded


def load_dataset(
    path: str | os.PathLike,
    *,
    size: tuple[int, int] = DEFAULT_SIZE,
    class_names: list[str] | None = None,
    strict: bool = False,
    medmnist_split: bool = False,
    max_classes: int | None = None,
    spill: str | os.PathLike | None = None,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> Dataset:
    """Read a folder per class, an AN2DL npz or a MedMNIST npz (detected from the path).

    The images end up in a memory-mapped file, unnamed, on the file system of ``spill``; the
    memory needed does not grow with the input, only the disk space.

    Args:
        path: the input.
        size: (H, W) every image is resized to (cv2.INTER_AREA) when it differs.
        class_names: names in label order; default: the sorted folder names, the npz's
            ``class_names`` key, or "0".."C-1".
        strict: an unreadable image file in a class folder is an error, not a skip.
        medmnist_split: set ``official_split`` (only valid for a MedMNIST npz).
        max_classes: for data scored by a trained model (evaluate): an npz's labels must
            lie below it, and a class without images is allowed.
        spill: a folder (it need not exist) on the file system to hold the images; default:
            the temporary folder (``TMPDIR``). ``Dataset.store.save_as`` can name the file.
        max_pixels: the most pixels one image may have (a file's header, an npz's H x W).

    Raises:
        InputError: a missing or unreadable input, missing keys, wrong dtype or rank, length
            mismatch, labels out of range or not integers, NaN/inf, an empty class.
    """
    p = Path(path)
    size = (int(size[0]), int(size[1]))
    folder = Path(tempfile.gettempdir() if spill is None else spill)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    if p.is_dir():
        if medmnist_split:
            raise InputError(f"{p}: --medmnist-split needs a MedMNIST npz, not a folder")
        return _load_folders(p, size, class_names, strict, folder, max_pixels)
    return _load_npz(p, size, class_names, medmnist_split, max_classes, folder, max_pixels)


def load_unlabelled(path: str | os.PathLike, size: tuple[int, int],
                    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
                    ) -> tuple[np.ndarray, list[str]] | None:
    """Unlabelled images under the same rules as ``load_dataset``: a flat folder of image files
    (ids: file names) or an npz with ``images`` and no ``labels`` (ids: row numbers); None
    for any other input (a folder per class, a labelled npz)."""
    p = Path(path)
    size = (int(size[0]), int(size[1]))
    if p.is_dir():
        entries = [e for e in p.iterdir() if not e.name.startswith(".")]
        files = sorted(e for e in entries if e.suffix.lower() in IMAGE_EXTENSIONS
                       and not e.is_dir())
        if not files or any(e.is_dir() for e in entries):
            return None
        check_memory(len(files), size, str(p))
        images = np.empty((len(files), *size, 3), np.uint8)
        for i, f in enumerate(files):
            img = read_image(f, size, max_pixels)
            if img is None:
                raise InputError(f"{f}: unreadable image (not an image file, or not 1, 3 or "
                                 "4 channels)")
            images[i] = img
        return images, [f.name for f in files]
    if p.suffix.lower() != ".npz" or not p.is_file():
        return None
    with open_npz(p) as z:
        if "images" not in z.files or "labels" in z.files:
            return None
        src = NpzMember(z, "images", p)
        check_image_array(src, max_pixels)
        images = convert_images(src, size, max_pixels=max_pixels)
    return images, [str(i) for i in range(len(images))]
