"""Free disk space: checked before a large write, so a full disk is one line, not a half file."""

from __future__ import annotations

import os
import shutil

from frozenaug.common.errors import InputError


def free_bytes(folder: str | os.PathLike) -> int:
    """Bytes an unprivileged process may still write in ``folder``'s file system."""
    return int(shutil.disk_usage(folder).free)


def human_size(n: float) -> str:
    """Bytes in a unit that keeps the needed/free comparison readable."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= 10 * scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{int(n):,} bytes"


def check_free_space(folder: str | os.PathLike, needed: int, what: str) -> None:
    """Raise an InputError naming ``what`` unless ``folder``'s file system has ``needed`` bytes.

    Raises:
        InputError: not enough space (the message gives both numbers).
    """
    free = free_bytes(folder)
    if free < needed:
        raise InputError(
            f"{what}: not enough disk space: needs about {human_size(needed)}, "
            f"only {human_size(free)} free in {folder}; free some space (or choose another --out) "
            "and run again"
        )
