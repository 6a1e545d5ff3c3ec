"""An AN2DL-style npz (``images``, ``labels``, optional ``class_names``) or a MedMNIST npz
(``train_images``, ``train_labels``, ``val_*``, ``test_*``) read into a ``Dataset``."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from frozenaug.common.errors import InputError, brief
from frozenaug.data.arrays import (
    NpzMember,
    check_image_array,
    convert_images,
    read_labels,
)
from frozenaug.data.dataset import Dataset, RowIds, check_class_names, check_classes
from frozenaug.data.imagefile import ImageFile
from frozenaug.data.members import check_rows, load_npz

MEDMNIST_SPLITS = ("train", "val", "test")


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
    names = check_classes(labels, class_names, f"{path}: labels", max_classes)
    return Dataset(store.array(), labels, names, str(path), RowIds(len(labels)), official,
                   store=store)
