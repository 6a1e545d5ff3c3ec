"""Configuration folders when HOME is unusable: never create HOME.

Keras (``~/.keras``) and matplotlib (``~/.config/matplotlib``) make their folder with
``makedirs``, so ``HOME=/nonexistent/home`` (a service account, a container) made the whole
tree, as root even under ``/``. When HOME is not an existing, writable folder, KERAS_HOME and
MPLCONFIGDIR (where not set already) point into one private temporary folder, set before
either library is imported and removed when the command ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

VARIABLES = ("KERAS_HOME", "MPLCONFIGDIR")


def home_usable() -> bool:
    home = os.environ.get("HOME") or ""
    return bool(home) and os.path.isdir(home) and os.access(home, os.W_OK | os.X_OK)


def redirect_config_dirs() -> Path | None:
    """Point the unset ``VARIABLES`` into a new temporary folder if HOME is unusable; return
    that folder (for ``remove``), or None where nothing was changed."""
    missing = [v for v in VARIABLES if not os.environ.get(v)]
    if home_usable() or not missing:
        return None
    try:
        tmp = Path(tempfile.mkdtemp(prefix="frozenaug-config-"))
    except OSError:
        return None  # no usable TMPDIR either: the libraries fall back on their own
    for v in missing:
        (tmp / v.lower()).mkdir()
        os.environ[v] = str(tmp / v.lower())
    return tmp


def remove(tmp: Path | None) -> None:
    if tmp is not None:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)


def private_tmpdir() -> Path | None:
    """A temporary folder of this command (TMPDIR for it and its children), for ``remove``:
    what a library leaves in it on a failure (Keras' asset folder when a save fails) goes with
    it. None where TMPDIR is unusable (the libraries then fail in their own words)."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix="frozenaug-tmp-"))
    except OSError:
        return None
    tempfile.tempdir = str(tmp)
    os.environ["TMPDIR"] = str(tmp)
    return tmp
