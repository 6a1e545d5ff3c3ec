"""Shard paths from a manifest, kept inside their build.

A manifest is a file anybody can edit: ``"path": "../outside/x.h5"`` made ``fit`` train on a
file outside the build and ``verify`` vouch for it. ``load_manifest`` checks every shard path
here, so every reader (verify, inspect, preview, the trainer's stream) refuses the same: a
path must be relative, in normal form (no ``.``, ``..``, empty parts or backslashes), start
with its shard's split folder, name a ``.h5`` file, and, with symlinks followed, stay inside
the build folder.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

from frozenaug.common.errors import brief


def path_problem(root: Path, rel: str, split: str) -> str | None:
    """What is wrong with the shard path ``rel`` of a ``split`` shard in the build ``root``,
    or None."""
    if not rel or "\\" in rel or "\x00" in rel:
        return f"shard path {brief(rel)} is empty or holds a backslash or NUL"
    if rel.startswith("/") or posixpath.normpath(rel) != rel or ".." in rel.split("/"):
        return f"shard path {brief(rel)} is not a plain relative path inside the build"
    if rel.split("/")[0] != split or not rel.endswith(".h5"):
        return f"shard path {brief(rel)} is not a .h5 file in the {split}/ folder"
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(root, rel))
    if os.path.commonpath([real_root, real]) != real_root:
        return f"shard path {brief(rel)} leads outside the build (to {brief(real)})"
    return None
