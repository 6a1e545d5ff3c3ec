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

import os
import tempfile
from pathlib import Path

import numpy as np

from frozenaug.common.errors import InputError
from frozenaug.common.imageheaders import DEFAULT_MAX_IMAGE_PIXELS
from frozenaug.data.arrays import (
    NpzMember,
    check_image_array,
    check_memory,
    convert_images,
)
from frozenaug.data.dataset import (  # noqa: F401  (the intake's public names)
    DEFAULT_SIZE,
    Dataset,
    check_class_names,
    fingerprint,
    parse_classes,
    parse_size,
)
from frozenaug.data.decode import read_image_file
from frozenaug.data.folders import IMAGE_EXTENSIONS, _load_folders
from frozenaug.data.npzinput import _load_npz, open_npz


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
            img = read_image_file(f, size, max_pixels)
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
