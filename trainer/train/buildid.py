"""A run is tied to its build by identity, not by a path relative to where fit ran.

``config.json`` keeps ``build_dir`` as given (relative to fit's working folder), so
``evaluate RUN`` from another folder with its own ``./build`` scored that build, and a resume
after ``build --overwrite --seed 9`` re-split the build trained on former val and test images.
``run.json`` therefore records the build's absolute path and the sha256 of its split (input
fingerprint and the rows of every split, ``split.json``) and of its manifest; evaluate takes
the recorded path by default and, like predict and ``fit --resume``, refuses in one line a
build at the run's path whose split is not the run's. Runs written before (no hash) keep
working as before.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from frozenaug.common.errors import InputError
from frozenaug.common.safeparse import read_json
from frozenaug.format import MANIFEST_NAME, SPLIT_NAME, read_split_identity, sha256_file
from frozenaug.trainer.layout import RUN_INFO_NAME


def split_sha256(build: str | os.PathLike) -> str | None:
    """sha256 of the build's split (canonical JSON of its fingerprint and rows); None for a
    build without split.json (hand-made ones, in tests)."""
    if not (Path(build) / SPLIT_NAME).exists():
        return None
    # the identity fit's --fine-build check compares
    text = json.dumps(list(read_split_identity(build)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def identity(build: str | os.PathLike, prefix: str = "build") -> dict[str, Any]:
    """The run.json keys that tie a run to ``build``."""
    return {f"{prefix}_split_sha256": split_sha256(build),
            f"{prefix}_manifest_sha256": sha256_file(Path(build) / MANIFEST_NAME)}


def _info(run: str | os.PathLike) -> dict[str, Any]:
    try:
        info = read_json(Path(run) / RUN_INFO_NAME, "run file")
    except (OSError, ValueError, InputError):
        return {}
    return info if isinstance(info, dict) else {}


def _check(run: str | os.PathLike, build: str | os.PathLike, want: Any, doing: str) -> None:
    if not isinstance(want, str):
        return  # a run from before the identity was recorded
    if split_sha256(build) != want:
        raise InputError(
            f"{build}: not the build run {run} trained on (its split differs from the one "
            f"recorded in {Path(run) / RUN_INFO_NAME}: rebuilt with another --seed, --split or "
            f"input?); {doing}")


def check_resume(run: Path, build_dir: str, fine_build: str) -> None:
    """``fit --resume``: the build (and fine build) must split as when the run began."""
    info = _info(run)
    for build, key in ((build_dir, "build"), (fine_build, "fine_build")):
        if build:
            _check(run, build, info.get(f"{key}_split_sha256"),
                   "resuming would train on its former val and test images; start again with "
                   "--overwrite, or restore the run's build")


def default_build(run: str | os.PathLike, config_build: str) -> str:
    """The build evaluate reads when none is named: the recorded absolute path, else (a run
    from before, or one moved with its build) the config's path."""
    recorded = _info(run).get("build_dir")
    if isinstance(recorded, str) and (Path(recorded) / MANIFEST_NAME).is_file():
        return recorded
    return config_build


def check_input(run: str | os.PathLike, build: str | os.PathLike | None,
                named: bool) -> None:
    """evaluate/predict: a build at the run's own path (or taken by default, ``named`` False)
    must be the run's build; another build the user names is theirs to choose."""
    if build is None or not (Path(build) / MANIFEST_NAME).is_file():
        return
    info = _info(run)
    recorded = info.get("build_dir")
    same_path = isinstance(recorded, str) and Path(build).resolve() == Path(recorded).resolve()
    if same_path or not named:
        _check(run, build, info.get("build_split_sha256"),
               "its test images may have been trained on; name the run's build, or fit anew")
