"""Who may write a folder: a ``flock`` on ``DIR/.lock``, exclusive for a writer, shared for
readers.

A build holds its output folder's lock exclusively, and so does a fit its run folder; a fit
holds its build(s) shared, and evaluate and predict their run (and a build they read) shared,
so ``build --overwrite`` of a build a fit reads, or a second fit into one run, is refused at
once instead of crashing the first.

The kernel releases a flock when the process holding it dies, however it dies (SIGKILL
included), so a killed holder never blocks the next one; its ``.lock`` file may stay behind with
the dead holder's pid in it, and is harmless. The file is unlinked on release by the last
holder only (an exclusive one, or a shared one that can take it exclusively on the way out), so
a newcomer never locks a fresh inode while others still hold the old one; a newcomer that
opened a file unlinked under it sees the inode change and starts again. flock is advisory and
local: it does not keep out a process on another machine writing over NFS.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from frozenaug.common.errors import InputError

LOCK_NAME = ".lock"

BUILD_BUSY = ("another build is writing there (pid {holder} holds {lock}); wait for it to "
              "finish, or choose another --out")
BUILD_READ = ("a running fit, evaluate or predict reads this build ({lock} is held shared); "
              "wait for it to finish, or choose another --out")


def _holder(fd: int) -> str:
    """The pid the current holder wrote into the lock file, or "unknown"."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


def _held_shared(fd: int) -> bool:
    """After a refused exclusive lock: True if the holders are readers (a shared lock works)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


def _open(path: Path, out: Path, shared: bool) -> int | None:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        if shared and e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            # A reader of a folder it may not write: lock an existing file read-only, else
            # read unlocked (a writer there would need the same rights we lack).
            with contextlib.suppress(OSError):
                return os.open(path, os.O_RDONLY)
            return None
        raise InputError(f"{out}: cannot write there ({e.strerror})") from None


def _acquire(path: Path, out: Path, shared: bool, busy: str, read: str) -> int | None:
    """Open and lock ``path``; the locked fd, or None where it cannot be locked."""
    tries = 0
    while True:
        fd = _open(path, out, shared)
        if fd is None:
            return None
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            tries += 1
            if shared and tries < 20:  # perhaps the last reader, exclusive for its unlink
                os.close(fd)
                time.sleep(0.01)
                continue
            holder = _holder(fd)
            by_readers = not shared and _held_shared(fd)
            os.close(fd)
            raise InputError(f"{out}: " + (read if by_readers else busy).format(
                holder=holder, lock=path)) from None
        except OSError as e:  # e.g. ENOLCK on a file system without locks: unprotected
            os.close(fd)
            print(f"warning: {path}: cannot lock ({e.strerror}); make sure no other process "
                  "writes into this folder", file=sys.stderr)
            return None
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        mine = os.fstat(fd)
        if st is not None and (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
            if not shared:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)  # unlinked by its last holder between our open and our flock


def _release(path: Path, fd: int | None, shared: bool) -> None:
    if fd is None:
        return
    try:
        if shared:  # the last reader out removes the file; another reader keeps it
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return
        # Unlinked while still locked, so a waiter that opened it sees the inode change.
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)


@contextlib.contextmanager
def folder_lock(out: str | os.PathLike, *, shared: bool = False, busy: str = BUILD_BUSY,
                read: str = BUILD_READ) -> Iterator[Path]:
    """Hold ``out/.lock`` (exclusively, or ``shared``) for the body of the ``with``.

    An exclusive lock creates ``out``; a folder this call created is removed again on the way
    out if the body left it empty, so a command that fails before writing leaves no trace. A
    shared lock needs ``out`` to exist. ``busy`` (another holds it exclusively, ``{holder}``
    its pid) and ``read`` (readers hold it) word the refusal after ``out: ``.

    Raises:
        InputError: another process holds the lock, or ``out`` cannot be created or written.
    """
    out = Path(out)
    created = False
    if not shared:
        created = not out.exists() and not out.is_symlink()
        try:
            out.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise InputError(f"{out}: exists and is not a folder") from None
        except OSError as e:
            raise InputError(f"{out}: cannot create the output folder ({e.strerror})") from None
    path = out / LOCK_NAME
    fd = _acquire(path, out, shared, busy, read)
    try:
        yield path
    finally:
        _release(path, fd, shared)
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only if empty


def build_lock(out: str | os.PathLike) -> contextlib.AbstractContextManager[Path]:
    """A build's exclusive lock on its output folder (see ``folder_lock``)."""
    return folder_lock(out)


def read_lock(build: str | os.PathLike) -> contextlib.AbstractContextManager[Path]:
    """A reader's shared lock on a build folder: a build into it is refused meanwhile."""
    return folder_lock(build, shared=True)
