"""Images held on disk instead of in memory: the intake's memory-mapped ``.npy`` file.

The intake decodes every image into an ``ImageFile``, row range by row range (``pwrite``, from
several threads at once), and hands on a read-only memory map of it; nothing downstream holds
the pixels in memory. The file has no name while it is filled (``O_TMPFILE``, or a temporary
unlinked at once where the file system lacks it), so a killed process leaves nothing behind and
the space comes back when the last map of it closes. ``save_as`` gives it a name (the build's
``.work/input.npy``, which the workers map) by a hard link, without copying a byte.

Pages of a memory map that a process has read stay in its resident set (as file pages) until
the map is closed: a pass over 6 GiB of input would show 6 GiB of RSS though the kernel could
drop them at any time. ``iter_rows`` and ``drop_pages`` give them back after each chunk, so the
resident set stays as small as the chunk.
"""

from __future__ import annotations

import contextlib
import errno
import io
import mmap
import os
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from frozenaug.common.atomic import TMP_PREFIX, atomic_path, current_umask
from frozenaug.common.disk import check_free_space
from frozenaug.common.errors import InputError

CHUNK_BYTES = 16 << 20  # rows read or moved at a time: 16 MiB (~600 images of 96x96)


def drop_pages(a: np.ndarray) -> None:
    """Unmap the pages of the file-backed memory map under ``a`` from this process (they stay
    in the page cache, and come back on the next access); nothing for an in-memory array."""
    while a is not None:
        m = getattr(a, "_mmap", None)
        if m is not None:
            # MAP_PRIVATE ('c') pages would lose their changes; shared ones keep them in the file.
            if getattr(a, "mode", "r") != "c" and hasattr(mmap, "MADV_DONTNEED"):
                with contextlib.suppress(ValueError, OSError):  # a closed map, an old kernel
                    m.madvise(mmap.MADV_DONTNEED)
            return
        a = getattr(a, "base", None)


def iter_rows(images: np.ndarray, max_bytes: int = CHUNK_BYTES
              ) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, rows) of ``images`` in order, about ``max_bytes`` at a time; a memory map's
    pages are dropped after each chunk (the caller must not keep the rows beyond it)."""
    row_bytes = max(1, int(np.prod(images.shape[1:])) * images.dtype.itemsize)
    step = max(1, max_bytes // row_bytes)
    for s in range(0, len(images), step):
        yield s, images[s : s + step]
        drop_pages(images)


def read_rows(images: np.ndarray, rows: np.ndarray, max_bytes: int = 4 << 20) -> np.ndarray:
    """``images[rows]`` as a new array, read front to back. A memory map of a named ``.npy``
    (``np.load(mmap_mode="r")``, as the build's workers open ``.work/input.npy``) is read with
    ``pread`` into the result, so no page of the file enters this process's RSS; any other
    array by slices of about ``max_bytes``, a memory map's pages dropped after each. Through
    the map, a shard's rows scattered over a large file would leave much of it resident: a
    fault maps the pages around it, a whole large folio of the page cache where there is one."""
    rows = np.asarray(rows, np.int64)
    out = np.empty((len(rows), *images.shape[1:]), images.dtype)
    order = np.argsort(rows, kind="stable")
    row_bytes = images[:1].nbytes
    path = getattr(images, "filename", None)
    if (path is not None and isinstance(images.base, mmap.mmap) and len(rows) and row_bytes
            and images.flags.c_contiguous):
        fd = os.open(path, os.O_RDONLY)
        try:
            flat = out.reshape(len(rows), -1).view(np.uint8)
            for j in order:
                pos = images.offset + int(rows[j]) * row_bytes
                if os.preadv(fd, [flat[j]], pos) != row_bytes:
                    raise OSError(errno.EIO, f"{path}: short read at row {rows[j]}")
        finally:
            os.close(fd)
        return out
    step = max(1, max_bytes // max(1, row_bytes))
    for s in range(0, len(order), step):
        o = order[s : s + step]
        out[o] = images[rows[o]]
        drop_pages(images)
    return out


def existing_folder(path: str | os.PathLike) -> Path:
    """``path`` if it is a folder, else its nearest existing ancestor folder."""
    p = Path(path).absolute()
    for q in (p, *p.parents):
        if q.is_dir():
            return q
    return Path(tempfile.gettempdir())


def _npy_header(shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
              "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _unnamed_file(folder: Path) -> tuple[int, bool]:
    """(fd, linkable): an O_TMPFILE file in ``folder``, or a temporary unlinked at once."""
    mode = 0o666 & ~current_umask()
    if hasattr(os, "O_TMPFILE"):
        try:
            return os.open(folder, os.O_TMPFILE | os.O_RDWR, mode), True
        except OSError as e:  # not supported by this file system: the fallback below
            if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
                raise
    fd, name = tempfile.mkstemp(prefix=TMP_PREFIX + "intake.", suffix=".npy", dir=folder)
    os.unlink(name)
    os.fchmod(fd, mode)
    return fd, False


class ImageFile:
    """(N, H, W, 3) uint8 rows in an unnamed ``.npy`` file, written by row ranges.

    Args:
        n: rows.
        size: (H, W).
        folder: where on disk (a folder that need not exist yet: its nearest existing ancestor
            is used, which is on the same file system as the folder once made).
        where: names the data in errors (the input file).

    Raises:
        InputError: not enough free space for the file (checked before anything is written),
            or the disk filled up while writing it.
    """

    def __init__(self, n: int, size: tuple[int, int], folder: str | os.PathLike,
                 where: str) -> None:
        self.shape = (int(n), int(size[0]), int(size[1]), 3)
        self.row_bytes = self.shape[1] * self.shape[2] * 3
        self.folder, self.where = existing_folder(folder), where
        header = _npy_header(self.shape)
        self.offset = len(header)
        check_free_space(
            self.folder, self.offset + self.shape[0] * self.row_bytes,
            f"{folder}: the memory map of {where}'s {self.shape[0]:,} images of "
            f"{self.shape[1]}x{self.shape[2]}")
        try:
            self.fd, self.linkable = _unnamed_file(self.folder)
        except OSError as e:
            raise InputError(f"{self.folder}: cannot create the memory map of {where} there "
                             f"({e.strerror})") from None
        self._closer = weakref.finalize(self, os.close, self.fd)
        self._write(header, 0)
        os.ftruncate(self.fd, self.offset + self.shape[0] * self.row_bytes)

    def _write(self, data: bytes | memoryview, pos: int) -> None:
        view = memoryview(data).cast("B")
        try:
            while view:  # pwrite may write less than asked
                done = os.pwrite(self.fd, view, pos)
                view, pos = view[done:], pos + done
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InputError(f"{self.folder}: disk full while writing the memory map of "
                                 f"{self.where} ({e.strerror})") from None
            raise

    def __setitem__(self, key: int | slice, rows: np.ndarray) -> None:
        """``f[i] = image`` or ``f[a:b] = images``: rows go straight to the file."""
        start = (key.start or 0) if isinstance(key, slice) else int(key)
        rows = np.ascontiguousarray(rows, np.uint8).reshape(-1, *self.shape[1:])
        if start < 0 or start + len(rows) > self.shape[0]:
            raise IndexError(f"rows {start}..{start + len(rows)} of {self.shape[0]}")
        self._write(rows.data, self.offset + start * self.row_bytes)

    def __len__(self) -> int:
        return self.shape[0]

    def keep_rows(self, rows: np.ndarray) -> None:
        """Keep only ``rows`` (ascending), moved down in order; the file shrinks to them."""
        rows = np.asarray(rows, np.int64)
        step = max(1, CHUNK_BYTES // self.row_bytes)
        buf = bytearray(step * self.row_bytes)
        for s in range(0, len(rows), step):
            part = rows[s : s + step]
            if (part == np.arange(s, s + len(part))).all():
                continue  # nothing skipped before these rows: they are in place
            for j, r in enumerate(part):  # each source row lies at or after its target
                view = memoryview(buf)[j * self.row_bytes : (j + 1) * self.row_bytes]
                if os.preadv(self.fd, [view], self.offset + int(r) * self.row_bytes) \
                        != self.row_bytes:
                    raise OSError(errno.EIO, "short read from the memory-map file")
            self._write(memoryview(buf)[: len(part) * self.row_bytes],
                        self.offset + s * self.row_bytes)
        self.shape = (len(rows), *self.shape[1:])
        header = _npy_header(self.shape)
        if len(header) != self.offset:  # numpy leaves room for the row count to change
            raise RuntimeError("npy header length changed")
        self._write(header, 0)
        os.ftruncate(self.fd, self.offset + len(rows) * self.row_bytes)

    def array(self) -> np.memmap:
        """A read-only memory map of the rows (it keeps the file alive on its own)."""
        with open(self.fd, "rb", closefd=False) as f:
            return np.memmap(f, np.uint8, mode="r", offset=self.offset, shape=self.shape)

    def save_as(self, path: str | os.PathLike) -> None:
        """Give the file the name ``path``, atomically: a hard link where the file system allows
        (no copy), else a copy through a temporary beside ``path``."""
        path = Path(path)
        os.fsync(self.fd)  # a resumed build trusts what it finds under that name
        if self.linkable:
            tmp = path.parent / f"{TMP_PREFIX}{path.name}.{os.getpid()}"
            try:
                tmp.unlink(missing_ok=True)
                # linkat(AT_SYMLINK_FOLLOW) on /proc/self/fd/N names an O_TMPFILE file; Python
                # calls linkat (not link, which would not follow) only when given a dir fd.
                folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.link(f"/proc/self/fd/{self.fd}", tmp.name, dst_dir_fd=folder,
                            follow_symlinks=True)
                finally:
                    os.close(folder)
                os.replace(tmp, path)
                return
            except OSError:  # no /proc, another file system: copy instead
                tmp.unlink(missing_ok=True)
        size = self.offset + self.shape[0] * self.row_bytes
        with atomic_path(path) as tmp, open(tmp, "wb") as out:
            for pos in range(0, size, CHUNK_BYTES):
                out.write(os.pread(self.fd, min(CHUNK_BYTES, size - pos), pos))

    def close(self) -> None:
        """Close the descriptor; the file lives on while a map of it is open."""
        self._closer()
