"""Arrays on their way in: npz members read in chunks (their headers checked against the bytes
the archive holds before anything is allocated), pixels converted to RGB uint8, labels checked,
and the memory an array to be held in memory will need checked against what is available
(the labelled intake writes into a memory-mapped file instead, ``data.imagefile``). Used by
``frozenaug.data.intake``, the one intake of every command."""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from frozenaug.common.errors import InputError, brief
from frozenaug.common.imageheaders import DEFAULT_MAX_IMAGE_PIXELS
from frozenaug.data.members import check_entry, check_image_size

_CHUNK_BYTES = 1 << 20  # input bytes read and converted at a time


def available_memory() -> int:
    """Bytes this process may still allocate: MemAvailable, or a cgroup's limit if lower."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            return 1 << 62
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            avail = min(avail, int(limit) - used)
    except (OSError, ValueError):
        pass
    return avail


def check_memory(n: int, size: tuple[int, int], where: str) -> None:
    """Refuse, before allocating, ``n`` RGB images of ``size`` that do not fit in memory."""
    needed = int(n) * int(size[0]) * int(size[1]) * 3
    free = available_memory()
    if needed > free:
        raise InputError(
            f"{where}: {n:,} images of {size[0]}x{size[1]} need {needed / 2**30:,.1f} GiB of "
            f"memory, {max(free, 0) / 2**30:,.1f} GiB is available; use a smaller --size or "
            "fewer images"
        )


def to_rgb(img: np.ndarray, where: str) -> np.ndarray:
    """One image (H,W), (H,W,1), (H,W,3) or (H,W,4), already RGB-ordered, to (H,W,3)."""
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=-1)
    if img.ndim == 3 and img.shape[-1] in (1, 3, 4):
        if img.shape[-1] == 1:
            return np.repeat(img, 3, axis=-1)
        return img[..., :3]
    raise InputError(f"{where}: image of shape {img.shape}, expected (H,W), (H,W,3) or (H,W,4)")


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if img.shape[:2] == size:
        return img
    return cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)


class NpzMember:
    """An array in an npz, read from the archive in chunks of rows: only the converted uint8
    images are ever held whole (no float, wrong-size or pre-concatenation copy of them)."""

    def __init__(self, z: np.lib.npyio.NpzFile, key: str, path: Path) -> None:
        self.z, self.where = z, f"{path}: {key}"
        self.unreadable = f"{path}: key {brief(key)} unreadable"
        self.name = key + ".npy" if key + ".npy" in z.zip.namelist() else key
        self.whole: np.ndarray | None = None
        try:
            check_entry(z.zip.getinfo(self.name), self.where)
            with z.zip.open(self.name) as f:
                header = self._header(f)
                if header is not None:
                    self._check_size(header, z.zip.getinfo(self.name).file_size - f.tell())
            if header is None or header[2]:  # Fortran order, objects or a newer header
                self.whole = z[key]  # numpy reads it (and refuses objects: no pickles)
                header = (self.whole.shape, self.whole.dtype, False)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as e:
            raise InputError(f"{self.unreadable} ({type(e).__name__}: {e})") from None
        self.shape, self.dtype = header[0], header[1]

    def _check_size(self, header: tuple, stored: int) -> None:
        """A header may claim any shape: compare with the bytes the archive really holds
        before anything is allocated for it (10**12 claimed rows must not reach numpy)."""
        shape, dtype = header[0], header[1]
        if dtype.hasobject:
            return  # numpy refuses it without allow_pickle
        claimed = dtype.itemsize
        for v in shape:
            claimed *= int(v)
        if claimed > stored:
            raise InputError(f"{self.where}: header claims shape {shape} {dtype} "
                             f"({claimed:,} bytes), the archive holds {max(stored, 0):,}; "
                             "the file is truncated or was altered")

    @staticmethod
    def _header(f: IO[bytes]) -> tuple[tuple[int, ...], np.dtype, bool] | None:
        """(shape, dtype, numpy must read it) from a .npy header; None for an unknown one."""
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            return None
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, fortran_order, dtype = read(f)
        return shape, dtype, bool(fortran_order or dtype.hasobject)

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, rows) of about ``_CHUNK_BYTES`` each, in order."""
        n, row_shape = self.shape[0], self.shape[1:]
        row_bytes = max(1, int(np.prod(row_shape)) * self.dtype.itemsize)
        step = max(1, _CHUNK_BYTES // row_bytes)
        if self.whole is not None:
            for s in range(0, n, step):
                yield s, self.whole[s : s + step]
            return
        try:
            with self.z.zip.open(self.name) as f:
                self._header(f)
                for s in range(0, n, step):
                    rows = min(step, n - s)
                    buf = f.read(rows * row_bytes)  # the last read checks the member's CRC
                    if len(buf) != rows * row_bytes:
                        raise EOFError(f"truncated at row {s + len(buf) // row_bytes}")
                    yield s, np.frombuffer(buf, self.dtype).reshape(rows, *row_shape)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError, zlib.error) as e:
            raise InputError(f"{self.unreadable} ({type(e).__name__}: {e})") from None


def check_image_array(src: NpzMember, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
    """An image array must be (N,H,W[,1|3|4]) uint8 or float, with at least one image, each
    within the pixel and byte limits (``data.members.check_image_size``)."""
    shape, where = src.shape, src.where
    if (len(shape) not in (3, 4) or (len(shape) == 4 and shape[-1] not in (1, 3, 4))
            or 0 in shape[1:]):
        raise InputError(
            f"{where}: shape {shape}, expected (N,H,W,3), (N,H,W) or (N,H,W,1|4)"
        )
    if shape[0] == 0:
        raise InputError(f"{where}: no images")
    if src.dtype != np.uint8 and not np.issubdtype(src.dtype, np.floating):
        raise InputError(f"{where}: dtype {src.dtype}, expected uint8 or float")
    check_image_size(shape, src.dtype, max_pixels, where)


def convert_images(src: NpzMember, size: tuple[int, int], out: Any = None,
                   start: int = 0, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Any:
    """Check an image array (N,H,W[,C]) and convert it chunk by chunk into rows ``start`` on of
    ``out`` (an array or a ``frozenaug.data.imagefile.ImageFile``; default: a new in-memory array,
    after checking that it fits), as (N,*size,3) uint8 RGB."""
    check_image_array(src, max_pixels)
    where = src.where
    scale = _float_scale(src) if np.issubdtype(src.dtype, np.floating) else None
    if out is None:
        check_memory(src.shape[0], size, where)
        out = np.empty((src.shape[0], *size, 3), np.uint8)
    for s, part in src.chunks():
        if scale is not None:
            part = part * scale  # one float copy, then in place: a large row stays ~2x
            np.rint(part, out=part)
            part = np.clip(part, 0, 255, out=part).astype(np.uint8)
        if part.ndim == 3:
            part = part[..., None]
        if part.shape[-1] == 3 and part.shape[1:3] == size:
            out[start + s : start + s + len(part)] = part
        else:
            for i, img in enumerate(part):
                out[start + s + i] = resize(to_rgb(img, where), size)
    return out


def _float_scale(src: NpzMember) -> float:
    """[0,1] floats are scaled by 255, [0,255] floats kept; a first pass checks the values."""
    lo, hi = np.inf, -np.inf
    for s, part in src.chunks():
        bad = ~np.isfinite(part.reshape(len(part), -1)).all(axis=1)
        if bad.any():
            raise InputError(f"{src.where}[{s + int(np.argmax(bad))}]: NaN or inf pixel values")
        lo, hi = min(lo, float(part.min())), max(hi, float(part.max()))
    if lo < 0 or hi > 255:
        raise InputError(
            f"{src.where}: float values in [{lo:g}, {hi:g}], expected [0, 1] or [0, 255]"
        )
    return 255.0 if hi <= 1.0 else 1.0


def read_labels(raw: np.ndarray, n: int, where: str) -> np.ndarray:
    """(N,), (N,1) integer-valued, or one-hot (N,C) labels -> (N,) int64."""
    if raw.ndim == 2 and raw.shape[1] == 1:
        raw = raw[:, 0]
    if raw.ndim not in (1, 2):
        raise InputError(f"{where}: shape {raw.shape}, expected (N,), (N,1) or one-hot (N,C)")
    if len(raw) != n:
        raise InputError(f"{where}: {len(raw)} labels for {n} images")
    if not (np.issubdtype(raw.dtype, np.integer) or np.issubdtype(raw.dtype, np.floating)
            or raw.dtype == np.bool_):
        raise InputError(f"{where}: dtype {raw.dtype}, expected integers")
    if np.issubdtype(raw.dtype, np.floating):
        bad = ~np.isfinite(raw.reshape(n, -1)).all(axis=1)
        if bad.any():
            raise InputError(f"{where}[{int(np.argmax(bad))}]: NaN or inf")
        frac = (raw != np.round(raw)).reshape(n, -1).any(axis=1)
        if frac.any():
            i = int(np.argmax(frac))
            raise InputError(f"{where}[{i}]: non-integer label {brief(raw[i])}")
    if raw.ndim == 2:
        ok = np.isin(raw, (0, 1)).all(axis=1) & (raw.sum(axis=1) == 1)
        if not ok.all():
            i = int(np.argmin(ok))
            raise InputError(f"{where}[{i}]: not one-hot (multi-label data is not supported)")
        return np.argmax(raw, axis=1).astype(np.int64)
    return raw.astype(np.int64)
