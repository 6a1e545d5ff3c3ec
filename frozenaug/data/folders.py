"""A folder per class read into a ``Dataset``: files decoded by a pool of threads, a batch of
files per task, straight into the memory-mapped image file."""

from __future__ import annotations

import os
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from frozenaug.common.errors import InputError, brief
from frozenaug.data.dataset import Dataset
from frozenaug.data.decode import read_image_file
from frozenaug.data.imagefile import ImageFile

# A file that does not decode is reported by the intake (skipped, or fatal with --strict), in
# one line naming it; OpenCV's own "[ WARN ] ... buffer is incomplete" lines would add noise.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
FOLDER_BATCH = 64  # files one thread decodes and writes at a time


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
            img = read_image_file(files[start + i], size, max_pixels)
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
