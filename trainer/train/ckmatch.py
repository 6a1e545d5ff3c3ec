"""A resumed run's checkpoint must be of the run's model.

A checkpoint of another architecture (copied in, or left by an edited config.json) loaded and
then failed deep inside Keras with a 248-line traceback, or, where the shapes allowed, trained
the wrong net. Before training on it, the loaded model's weight shapes are compared with those
of the model the config builds; the first difference is named in one line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def _shapes(model: Any) -> list[tuple[str, tuple[int, ...]]]:
    return [(w.path if hasattr(w, "path") else w.name, tuple(w.shape)) for w in model.weights]


def difference(got: Any, want: Any) -> str:
    """What differs between two models' weights ("" when their shapes agree)."""
    a, b = _shapes(got), _shapes(want)
    if len(a) != len(b):
        return f"{len(a)} weight arrays, the model has {len(b)}"
    for (name_a, sa), (_, sb) in zip(a, b, strict=True):
        if sa != sb:
            return f"{name_a} is {list(sa)}, the model's is {list(sb)}"
    return ""


def mismatch_line(path: Path, what: str) -> str:
    return (f"{path}: the run's checkpoint does not match the model of its config ({what}); "
            "start again with --overwrite")


def check_matches(path: Path, model: Any, reference: Callable[[], Any]) -> None:
    """Raise InputError naming ``path`` unless ``model`` has the shapes of ``reference()``."""
    from frozenaug.common.errors import InputError

    what = difference(model, reference())
    if what:
        raise InputError(mismatch_line(path, what))


def load_weights_checked(model: Any, path: Path) -> None:
    """``model.load_weights(path)``; a file of another architecture is one line."""
    from frozenaug.common.errors import InputError

    try:
        model.load_weights(path)
    except ValueError as e:  # Keras: "... expected N variables, received M" and the like
        raise InputError(mismatch_line(path, " ".join(str(e).split())[:200])) from None
