"""Opening run folders: one (``load_run``), or several as one model, an ensemble
(``evaluate RUN1 RUN2 ...`` and ``predict RUN1 RUN2 ... INPUT``).

Training again from the same shards is what the tool is for, and runs that differ only in
their seed make different mistakes: the mean of their softmax outputs (an ensemble) is more
accurate and more robust than any one of them (bench/quality.py measures by how much). The
members must predict the same classes from images of the same size; each is a run folder as
``fit`` left it, and its model is loaded as one run's is.
tta.predict_proba averages over the members (and over the views with ``--tta``).

The command line names the runs first: every leading path that is a run folder is a member;
for ``evaluate`` a last path that is not one is the input (default: the first run's build,
whose split every member must have trained on, which the CLI checks through train.buildid).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frozenaug.common.errors import InputError
from frozenaug.common.safeparse import read_json
from frozenaug.data.intake import check_class_names
from frozenaug.trainer.config import FitConfig, load_run_config
from frozenaug.trainer.layout import CONFIG_NAME, MODEL_NAME, RUN_INFO_NAME


@dataclass
class Run:
    """A finished fit: its model, config and the class names it predicts."""

    path: Path
    model: Any  # keras.Model
    config: FitConfig
    class_names: list[str]
    image_shape: tuple[int, int, int]


def load_run(run_dir: str | os.PathLike) -> Run:
    """Open a run directory; a missing or damaged file is an InputError that names it."""
    run = Path(run_dir)
    model_path, info_path = run / MODEL_NAME, run / RUN_INFO_NAME
    config, names, shape = read_run_files(run)
    import keras

    import frozenaug.trainer.train.models  # noqa: F401  (registers the custom layers a saved model may hold)

    try:
        model = keras.saving.load_model(model_path, compile=False)
    except Exception as e:  # a damaged zip/h5 raises many types
        raise InputError(f"{model_path}: unreadable model ({type(e).__name__}: {e})") from None
    try:  # the model must be the one run.json describes, or every output is mislabelled
        outputs, inputs = int(model.output_shape[-1]), tuple(model.input_shape[1:])
    except (AttributeError, TypeError, ValueError, IndexError):
        outputs, inputs = -1, ()
    if outputs != len(names) or inputs != shape:
        raise InputError(f"{model_path}: the model maps {inputs} images to {outputs} classes, "
                         f"{info_path} says {shape} and {len(names)} classes; the run folder "
                         "is inconsistent")
    return Run(run, model, config, names, shape)  # type: ignore[arg-type]


def read_run_files(run_dir: str | os.PathLike) -> tuple[FitConfig, list[str], tuple[int, ...]]:
    """(config, class names, image shape) of a run folder, without TensorFlow: the CLI checks
    them before importing it."""
    run = Path(run_dir)
    if not run.is_dir():
        raise InputError(f"{run}: no such run directory")
    model_path = run / MODEL_NAME
    if not model_path.is_file():
        raise InputError(f"{model_path}: missing; {run} holds no finished run (fit it first, "
                         "or resume it with fit --resume)")
    config = load_run_config(run)
    info_path = run / RUN_INFO_NAME
    try:
        info = read_json(info_path, "run info")
        names = [str(c) for c in info["class_names"]]
        shape = tuple(int(v) for v in info["image_shape"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{info_path}: unreadable run info ({type(e).__name__}: {e})") from None
    check_class_names(names, f"{info_path}: class_names")
    if len(shape) != 3 or shape[-1] != 3 or min(shape) < 1:
        raise InputError(f"{info_path}: image_shape {list(shape)} is not [H, W, 3]")
    return config, names, shape


def is_run_dir(path: str | os.PathLike) -> bool:
    """A folder that fit wrote (it holds the run config and run info)."""
    p = Path(path)
    return (p / CONFIG_NAME).is_file() and (p / RUN_INFO_NAME).is_file()


def split_paths(paths: Sequence[str], input_required: bool) -> tuple[list[str], str | None]:
    """(run folders, input) from the command line's positional paths: the runs first, then
    the input (``input_required``: always the last path, as ``predict`` takes it; otherwise
    the last path when it is not a run folder).

    Raises:
        InputError: no run, or a path among the runs that is not a run folder.
    """
    paths = list(paths)
    if input_required:
        if len(paths) < 2:
            raise InputError("predict: give a run directory and the input to predict (RUN "
                             "[RUN ...] INPUT)")
        runs, data = paths[:-1], paths[-1]
    elif len(paths) > 1 and not is_run_dir(paths[-1]):
        runs, data = paths[:-1], paths[-1]
    else:
        runs, data = paths, None
    for r in runs[1:]:
        if not is_run_dir(r):  # the first is checked by read_run_files with its own message
            raise InputError(f"{r}: not a run directory (no {CONFIG_NAME} and {RUN_INFO_NAME});"
                             " every path before the input must be a run of the ensemble")
    return runs, data


def as_run_dirs(run_dir: str | os.PathLike | Sequence[str | os.PathLike]) -> list:
    """One run folder or several, as a list."""
    return [run_dir] if isinstance(run_dir, (str, os.PathLike)) else list(run_dir)


def check_members(run_dirs: Sequence[str | os.PathLike]) -> None:
    """The runs can form an ensemble: readable, the same classes, the same image size (no
    TensorFlow: the CLI checks this before importing it)."""
    first = read_run_files(run_dirs[0])
    for r in run_dirs[1:]:
        other = read_run_files(r)
        if other[1] != first[1] or other[2] != first[2]:
            raise InputError(
                f"{Path(r) / RUN_INFO_NAME}: predicts {other[1]} from {other[2]} images, "
                f"{run_dirs[0]} predicts {first[1]} from {first[2]}; an ensemble's runs must "
                "share classes and image size")


def load_runs(run_dirs: Sequence[str | os.PathLike]) -> Run:
    """One run, or several as one ``Run`` whose ``model`` is the tuple of their models (its
    path, config and classes are the first run's)."""
    if not run_dirs:
        raise InputError("no run directory given")
    if len(run_dirs) == 1:
        return load_run(run_dirs[0])
    check_members(run_dirs)
    runs = [load_run(r) for r in run_dirs]
    first = runs[0]
    return Run(first.path, tuple(r.model for r in runs), first.config, first.class_names,
               first.image_shape)


def member_files(run_dirs: Sequence[str | os.PathLike]) -> list[Path]:
    """Every member's model, config and run info: inputs an output must never replace."""
    return [Path(r) / n for r in run_dirs for n in (MODEL_NAME, CONFIG_NAME, RUN_INFO_NAME)]
