"""Write files so they appear complete or not at all (temporary name in the same folder, rename)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from frozenaug.common.errors import InputError

TMP_PREFIX = ".tmp-"
# Errors of the file system under an output, not of the program: one line, exit 2.
_FS_FULL_OR_READONLY = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def _fs_error(path: Path, e: OSError) -> InputError:
    what = "disk full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "read-only file system"
    return InputError(f"{path}: cannot write it: {what} ({e.strerror}); nothing was written")


def check_target(path: Path) -> None:
    """Refuse, before any work, a target the final rename must not replace: a folder (the
    rename would fail after all the work) or anything else that is not a regular file, such
    as a device (``--out /dev/null`` as root would replace the system's), a FIFO or a socket,
    or a symlink to one (the rename replaces the link; writing through it is not atomic)."""
    if path.is_dir():
        raise InputError(f"{path}: is a folder; name a file to write")
    kind = _special_kind(path)
    if kind:
        raise InputError(f"{path}: is {kind}, not a regular file; a write would replace it, "
                         "so name a regular file (or a new name) to write")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{parent}: exists and is not a folder (writing {path})")
            return


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto it.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    check_target(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent)
    except OSError as e:
        if e.errno in _FS_FULL_OR_READONLY:
            raise _fs_error(path, e) from None
        raise
    os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; outputs follow the umask
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp  # the caller's errors pass unchanged (write_shard words its own)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in _FS_FULL_OR_READONLY:
            raise _fs_error(path, e) from None
        raise


def _special_kind(path: Path) -> str:
    """What ``path`` is when it exists (through a symlink) and is not a regular file, else ""."""
    try:
        mode = os.stat(path).st_mode
    except OSError:  # missing, or a dangling link: a new file goes there
        return ""
    for test, kind in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind + (" (through a symlink)" if path.is_symlink() else "")
    return "" if stat.S_ISREG(mode) else "not a regular file"


def write_together(files: dict[Path, bytes]) -> None:
    """Write several files so that they appear together or not at all (metrics.json and its
    PNG, scan.json and its contact sheet): every temporary is written and fsynced first, then
    all are renamed. On failure the temporaries, and folders made for them, are removed.

    Raises:
        InputError: the disk is full or read-only (the line names the file).
    """
    for p in files:
        check_target(Path(p))
    made = {d for p in files for d in Path(p).absolute().parents if not d.exists()}
    tmps: list[tuple[Path, Path]] = []
    path = Path()
    try:
        for path, data in files.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent)
            tmps.append((Path(name), path))
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o666 & ~current_umask())  # mkstemp makes 0600
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for tmp, path in tmps:
            os.replace(tmp, path)
    except BaseException as e:
        for tmp, _ in tmps:
            tmp.unlink(missing_ok=True)
        for d in sorted(made, key=lambda q: len(q.parts), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()  # only if empty
        if isinstance(e, OSError) and e.errno in _FS_FULL_OR_READONLY:
            raise _fs_error(path, e) from None
        raise


def current_umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    write_together({Path(path): data})


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Deterministic JSON (sorted keys, fixed indent) so equal content gives equal bytes."""
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete leftovers of an interrupted atomic write in ``folder``; return how many."""
    n = 0
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.glob(TMP_PREFIX + "*"):
            p.unlink(missing_ok=True)
            n += 1
    return n
