"""What a command may remove or replace: only its own files, never an input.

Every command that deletes or replaces something asks this module first: ``build
--overwrite`` and ``fit --overwrite`` (``removable``), and ``predict``, ``preview`` and
``evaluate`` before writing their output (``check_not_input``). The rules, in one place:

* never remove or replace an input (the data set, a build directory being read, a config,
  policy or weights file), a folder that contains one, or anything inside one;
* a folder is removed only when every file in it matches the command's own file patterns
  (a ``train/`` folder of shards is a build's; a ``train/`` of PNGs is somebody's data);
* a file is replaced only when it is not a folder (and not an input).

All checks run before the first removal, so a refusal leaves everything as it was.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from frozenaug.common.errors import InputError

# A pattern set per folder name; each pattern is matched against the path relative to it.
Patterns = Mapping[str, tuple[str, ...]]


def _resolve(p: str | os.PathLike) -> Path:
    return Path(os.path.abspath(Path(p).expanduser())).resolve()


def _overlaps(p: Path, q: Path) -> bool:
    """True if ``p`` and ``q`` are the same path or one lies inside the other."""
    return p == q or p in q.parents or q in p.parents


def check_not_input(target: str | os.PathLike, inputs: Iterable[str | os.PathLike | None],
                    what: str, inside_ok: bool = False) -> None:
    """Refuse to write or remove ``target`` if it is, holds or lies inside one of ``inputs``
    (``inside_ok``: a new file inside an input folder is allowed, e.g. a CSV of predictions).

    Raises:
        InputError: naming ``target``, the input and ``what`` was about to happen.
    """
    t = _resolve(target)
    for inp in inputs:
        if inp is None or str(inp) == "":
            continue
        i = _resolve(inp)
        if _overlaps(t, i) and not (inside_ok and i in t.parents):
            rel = "is" if t == i else ("holds" if t in i.parents else "lies inside")
            raise InputError(f"{target}: {rel} the input {inp}; {what} would destroy it; "
                             "choose another output")


def _foreign_file(folder: Path, patterns: tuple[str, ...]) -> Path | None:
    """The first file (or link, or odd entry) under ``folder`` that matches no pattern."""
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        base = Path(dirpath)
        for name in [*filenames, *(d for d in dirnames if (base / d).is_symlink())]:
            rel = (base / name).relative_to(folder).as_posix()
            if (base / name).is_symlink() or not any(
                    fnmatch.fnmatchcase(rel, pat) for pat in patterns):
                return base / name
    return None


def removable(root: str | os.PathLike, names: Iterable[str], own: Patterns,
              inputs: Iterable[str | os.PathLike | None], flag: str = "--overwrite") -> list[Path]:
    """The existing ``root/name`` paths that ``flag`` may remove; raise if any is not ours.

    ``own`` maps a folder's name to the patterns of the files the command writes in it; a
    folder whose name is not in ``own`` may not be removed at all, a file always may (once
    it is checked not to be an input).

    Raises:
        InputError: one path is an input (or holds or lies in one), or a folder holds a file
            the command did not write; nothing has been removed.
    """
    root = Path(root)
    inputs = list(inputs)
    found = []
    for name in names:
        p = root / name
        if not p.exists() and not p.is_symlink():
            continue
        check_not_input(p, inputs, flag)
        if p.is_dir() and not p.is_symlink():
            foreign = _foreign_file(p, own.get(name, ()))
            if foreign is not None or name not in own:
                shown = foreign if foreign is not None else p
                raise InputError(f"{shown}: not written by this tool; {flag} removes only its "
                                 f"own files, so {p} stays; move it away or choose another "
                                 "output folder")
        found.append(p)
    return found


def remove(paths: Iterable[Path]) -> None:
    """Remove what ``removable`` returned (files, links and checked folders)."""
    for p in paths:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
