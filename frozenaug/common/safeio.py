"""Files read whole: only regular files, and never more than a stated limit.

A FIFO named ``pipe.png`` or ``--config fifo.yaml`` would block a plain ``open`` forever, and
``--config /dev/zero`` (or a symlink to it) reads until memory runs out. Every file the tools
read whole goes through ``open_regular``: it opens with ``O_NONBLOCK`` (so opening a FIFO
returns at once), checks with ``fstat`` that the descriptor is a regular file, and checks its
size against the caller's limit; ``read_bytes`` then reads at most ``limit + 1`` bytes, so a
file that grows while read (or a ``/proc`` file that claims size 0) cannot go past it either.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat

from frozenaug.common.errors import InputError

KIB, MIB = 1 << 10, 1 << 20
# Files a person writes (build/fit config, policy, class list): a few KiB in practice.
CONFIG_MAX_BYTES = 4 * MIB
# Files the tools write and read back (manifest.json, split.json, state.json, run.json...):
# split.json lists every input row (~8 bytes each), so 10 million rows fit.
DATA_JSON_MAX_BYTES = 256 * MIB

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISDIR, "a folder"))


def kind_of(mode: int) -> str:
    """What a file of ``st_mode`` is, in words, for a file that is not a regular one."""
    for test, words in _KINDS:
        if test(mode):
            return words
    return "not a regular file"


def _a(what: str) -> str:
    return ("an " if what[:1] in "aeiou" else "a ") + what


def _size(n: int) -> str:
    return f"{n / MIB:,.1f} MiB" if n >= MIB else f"{n:,} bytes"


def open_regular(path: str | os.PathLike, limit: int | None, what: str = "file",
                 hint: str = "") -> int:
    """A read-only descriptor of ``path`` (symlinks followed) that is a regular file no larger
    than ``limit`` bytes (None: any size). The caller closes it.

    Raises:
        InputError: ``path`` is a FIFO, device, socket or folder, or larger than ``limit``.
        OSError: it cannot be opened (missing, no permission, a looping symlink).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{path}: {kind_of(st.st_mode)}, not a regular file (read as "
                             f"{_a(what)})")
        if limit is not None and st.st_size > limit:
            raise InputError(f"{path}: {_size(st.st_size)}, larger than the limit for {_a(what)} "
                             f"({_size(limit)}{hint})")
        # blocking reads from here on (O_NONBLOCK means nothing for a regular file anyway)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_regular(path: str | os.PathLike, what: str = "file") -> None:
    """Refuse ``path`` unless it is a regular file (see ``open_regular``); a file that cannot
    be opened at all is left for the caller's own open to report."""
    with contextlib.suppress(OSError):
        os.close(open_regular(path, None, what))


def read_bytes(path: str | os.PathLike, limit: int, what: str = "file",
               hint: str = "") -> bytes:
    """The whole of a regular file of at most ``limit`` bytes (see ``open_regular``)."""
    fd = open_regular(path, limit, what, hint)
    try:
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(limit + 1 - total, 4 * MIB))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    finally:
        os.close(fd)
    if total > limit:
        raise InputError(f"{path}: larger than the limit for {_a(what)} ({_size(limit)}{hint})")
    return b"".join(chunks)


def read_text(path: str | os.PathLike, limit: int, what: str = "file") -> str:
    """``read_bytes`` decoded as UTF-8 (UnicodeDecodeError for other bytes, as ``read_text``)."""
    return read_bytes(path, limit, what).decode("utf-8")


def open_binary(path: str | os.PathLike, what: str = "file"):  # type: ignore[no-untyped-def]
    """A buffered binary file object of a regular file of any size (an npz, read in parts)."""
    return os.fdopen(open_regular(path, None, what), "rb")
