"""npz archives and their members, checked before anything is allocated for them.

``data.arrays.NpzMember`` compares a member's header with the bytes its zip entry declares;
what is here covers what that leaves open:

* the archive must be a regular file (a FIFO named ``data.npz`` would block ``np.load``);
* a member flagged encrypted (zip general-purpose bit 0), or stored with a compression method
  zipfile cannot read, is refused in one line (zipfile raises RuntimeError or
  NotImplementedError from deep inside ``np.load``);
* a deflated member may declare any uncompressed size, so the labels' row count is compared
  with the image count from its header, before numpy reads the member whole;
* one image of an npz must stay within the pixel limit and ``MAX_IMAGE_BYTES``: the intake
  reads and converts at least one whole row at a time.
"""

from __future__ import annotations

import os
import zipfile
from collections import Counter
from typing import Any

import numpy as np

from frozenaug.common.errors import InputError
from frozenaug.common.imageheaders import check_pixels
from frozenaug.common.safeio import open_binary

MAX_IMAGE_BYTES = 256 << 20  # one npz image: 8192x8192x4 uint8, 4096x4096x4 float32
MAX_SMALL_MEMBER_BYTES = 64 << 20  # class_names, read whole
_READABLE = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


def load_npz(path: str | os.PathLike) -> np.lib.npyio.NpzFile:
    """``np.load(path, allow_pickle=False)`` of a regular file; the archive owns the file
    object, so closing it (``with``) closes the file."""
    f = open_binary(path, "npz archive")
    try:
        z = np.load(f, allow_pickle=False)
    except BaseException:
        f.close()
        raise
    if not isinstance(z, np.lib.npyio.NpzFile):
        f.close()
        return z
    z.fid = f  # what np.load(path) sets when it opened the file itself
    return z


def check_entry(info: zipfile.ZipInfo, where: str) -> None:
    """A zip entry zipfile can read without a password."""
    if info.flag_bits & 0x1:
        raise InputError(f"{where}: the member is encrypted (zip flag bit 0); save the arrays "
                         "again with numpy.savez, without a password")
    if info.compress_type not in _READABLE:
        raise InputError(f"{where}: the member uses zip compression method "
                         f"{info.compress_type}, which cannot be read; save the arrays again "
                         "with numpy.savez or numpy.savez_compressed")


def check_image_size(shape: tuple[int, ...], dtype: np.dtype, max_pixels: int,
                     where: str) -> None:
    """One image of an (N,H,W[,C]) array: H x W within ``max_pixels``, its bytes within
    ``MAX_IMAGE_BYTES``."""
    if len(shape) < 3:
        return
    h, w = int(shape[1]), int(shape[2])
    check_pixels(w, h, max_pixels, where, "images of ")
    row = int(np.prod(shape[1:], dtype=object)) * dtype.itemsize
    if row > MAX_IMAGE_BYTES:
        raise InputError(f"{where}: each image of shape {tuple(shape[1:])} {dtype} takes "
                         f"{row / 2**20:,.0f} MiB, more than the limit of "
                         f"{MAX_IMAGE_BYTES >> 20} MiB per image")


def check_rows(member: Any, n: int | None, where: str) -> None:
    """A member read whole (labels, class_names): ``n`` rows when ``n`` is given, and not more
    bytes than an image count or ``MAX_SMALL_MEMBER_BYTES`` can explain; ``member`` is a
    ``data.arrays.NpzMember`` (its header only has been read)."""
    shape = tuple(member.shape)
    rows = int(shape[0]) if shape else 1
    if n is not None and rows != n:
        raise InputError(f"{where}: {rows:,} labels for {n:,} images")
    size = int(np.prod(shape, dtype=object)) * member.dtype.itemsize
    limit = MAX_SMALL_MEMBER_BYTES if n is None else max(MAX_SMALL_MEMBER_BYTES, 64 * n)
    if size > limit:
        raise InputError(f"{where}: shape {shape} {member.dtype} ({size:,} bytes) is larger than "
                         f"such a member can be ({limit:,} bytes)")


def duplicates(names: list[str]) -> list[str]:
    """The names that occur more than once, sorted; linear in the count (a Counter)."""
    return sorted(n for n, c in Counter(names).items() if c > 1)
