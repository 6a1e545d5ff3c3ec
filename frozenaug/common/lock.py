"""One build at a time per output directory: an exclusive ``flock`` on ``DIR/.lock``.

The lock is held for the whole build. The kernel releases a flock when the process holding it
dies, however it dies (SIGKILL included), so a killed build never blocks the next one; its
``.lock`` file may stay behind with the dead holder's pid in it, and is harmless. flock is
advisory and local: it does not keep out a build on another machine writing over NFS.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from frozenaug.common.errors import InputError

LOCK_NAME = ".lock"


def _holder(fd: int) -> str:
    """The pid the current holder wrote into the lock file, or "unknown"."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


def _acquire(path: Path, out: Path) -> int | None:
    """Open and lock ``path``; the locked fd, or None where the file system has no flock."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise InputError(f"{out}: cannot write there ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise InputError(
                f"{out}: another build is writing there (pid {holder} holds {path}); wait for "
                "it to finish, or choose another --out"
            ) from None
        except OSError as e:  # e.g. ENOLCK on a file system without locks: build unprotected
            os.close(fd)
            print(f"warning: {path}: cannot lock ({e.strerror}); make sure no other build "
                  "writes into this folder", file=sys.stderr)
            return None
        # The previous holder unlinks the file on release. If that happened between our open
        # and our flock, we hold a lock on a file nobody else will open: start again.
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        mine = os.fstat(fd)
        if st is not None and (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)


@contextlib.contextmanager
def build_lock(out: str | os.PathLike) -> Iterator[Path]:
    """Hold ``out/.lock`` exclusively (creating ``out``) for the body of the ``with``.

    A folder this call created is removed again on the way out if the body left it empty, so a
    build that fails before writing anything leaves no trace.

    Raises:
        InputError: another process holds the lock (the message names its pid), or ``out``
            cannot be created or written.
    """
    out = Path(out)
    created = not out.exists() and not out.is_symlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError(f"{out}: exists and is not a folder") from None
    except OSError as e:
        raise InputError(f"{out}: cannot create the output folder ({e.strerror})") from None
    path = out / LOCK_NAME
    fd = _acquire(path, out)
    try:
        yield path
    finally:
        # Unlinked while still locked, so a waiter that opened it sees the inode change.
        path.unlink(missing_ok=True)
        if fd is not None:
            os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only if empty
