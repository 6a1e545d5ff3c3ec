"""Class probabilities of a model over uint8 images, optionally with test-time augmentation.

TTA averages the softmax over the 8 symmetries of the square (the dihedral group D4: rotations
by 0, 90, 180, 270 degrees, each with and without a horizontal flip). Cells under a microscope
have no orientation, so all 8 views are equally valid and their average is a cheaper ensemble.
Non-square images only have the 4 symmetries that keep their shape (identity, the two flips,
rotation by 180 degrees). evaluate, evaluate --distort and predict all come through here.

``--tta d8`` adds the same 8 views of the image turned by 45 degrees (borders reflected): 16
views, twice the cost, for damage that rotates by angles other than multiples of 90 degrees.

An ensemble (several runs, trainer/assess/ensemble.py) is a sequence of models: the softmax
is averaged over every model and view, and ``adapt_bn`` adapts each model on its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from frozenaug.common.errors import InputError

View = Callable[[np.ndarray], np.ndarray]


def _rot(k: int, flip: bool) -> View:
    def view(x: np.ndarray) -> np.ndarray:
        y = x[:, :, ::-1] if flip else x
        return np.ascontiguousarray(np.rot90(y, k, axes=(1, 2)))

    return view


DIHEDRAL: tuple[View, ...] = tuple(_rot(k, f) for f in (False, True) for k in range(4))
TTA_KINDS = ("d4", "d8")  # the 8 dihedral views; and those of the image turned by 45 degrees


def _turned(view: View, degrees: float) -> View:
    def turned(x: np.ndarray) -> np.ndarray:
        import cv2

        h, w = x.shape[1:3]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
        y = np.stack([cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REFLECT_101) for img in x])
        return view(y)

    return turned


def views(shape: tuple[int, ...], kind: str | bool = "d4") -> tuple[View, ...]:
    """The views of images of ``shape`` (N, H, W, C): the symmetries of the square (8; a
    non-square image has 4), and with ``kind`` "d8" the same again turned by 45 degrees."""
    if kind is True:
        kind = "d4"
    if kind not in TTA_KINDS:
        raise InputError(f"--tta: must be one of {', '.join(TTA_KINDS)}, got {kind!r}")
    base = DIHEDRAL if shape[1] == shape[2] else tuple(DIHEDRAL[i] for i in (0, 2, 4, 6))
    if kind == "d8":
        return (*base, *(_turned(v, 45.0) for v in base))
    return base


@dataclass
class Cost:
    """Wall seconds of one prediction: the plain pass (the identity view of the first model),
    all views of all models, and the BatchNorm adaptation before them (0 without
    --adapt-bn)."""

    views: int
    plain_s: float
    total_s: float
    adapt_s: float = 0.0
    models: int = 1

    @property
    def factor(self) -> float:
        return self.total_s / self.plain_s if self.plain_s > 0 else 1.0

    def describe(self) -> str:
        parts = []
        if self.views > 1 or self.models > 1:
            what = " x ".join(p for p in (f"{self.views} views" if self.views > 1 else "",
                                          f"{self.models} models" if self.models > 1 else "")
                              if p)
            parts.append(f"{'tta' if self.views > 1 else 'ensemble'}: {what}, "
                         f"{self.total_s:.1f} s instead of "
                         f"{self.plain_s:.1f} s (+{self.total_s - self.plain_s:.1f} s, "
                         f"{self.factor:.1f}x)")
        if self.adapt_s:
            parts.append(f"adapt-bn: {self.adapt_s:.1f} s recomputing BatchNorm statistics")
        return "; ".join(parts)


def predict_proba_timed(model: Any, images: np.ndarray, batch_size: int = 64,
                        tta: bool | str | None = False,
                        adapt_bn: bool = False) -> tuple[np.ndarray, Cost]:
    """(N, classes) float32 softmax of ``model`` (or the mean over a sequence of models, an
    ensemble) over uint8 (N, H, W, 3) ``images``, and what it cost.

    ``tta``: the mean over the dihedral views (True or "d4": 8x the cost; "d8": 16 views,
    :func:`views`). ``adapt_bn``: first recompute
    every BatchNorm layer's statistics on ``images`` themselves (train.bnstats.adapt_bn),
    put back afterwards, so the model object leaves as it came.
    """
    if batch_size < 1:
        raise InputError(f"--batch-size: must be >= 1, got {batch_size}")
    members = list(model) if isinstance(model, (list, tuple)) else [model]
    todo = views(images.shape, tta) if tta else DIHEDRAL[:1]
    if not len(images):
        return (np.zeros((0, members[0].output_shape[-1]), np.float32),
                Cost(len(todo), 0.0, 0.0, models=len(members)))
    total = np.zeros((len(images), members[0].output_shape[-1]), np.float64)
    plain_s = total_s = adapt_s = 0.0
    for m in members:
        part, cost = _one_model(m, images, todo, batch_size, adapt_bn)
        total += part
        plain_s = plain_s or cost.plain_s
        total_s += cost.total_s
        adapt_s += cost.adapt_s
    proba = (total / (len(todo) * len(members))).astype(np.float32)
    return proba, Cost(len(todo), plain_s, total_s, adapt_s, len(members))


def _one_model(model: Any, images: np.ndarray, todo: tuple[View, ...], batch_size: int,
               adapt_bn: bool) -> tuple[np.ndarray, Cost]:
    """The softmax of one model summed over the views ``todo`` (float64), and its cost."""
    saved = None
    t0 = time.perf_counter()
    if adapt_bn:
        from frozenaug.trainer.train import bnstats

        saved = bnstats.snapshot_bn_statistics(model)
        bnstats.adapt_bn(model, images, batch_size)
    adapt_s = time.perf_counter() - t0 if adapt_bn else 0.0
    try:
        if len(todo) > 1:  # trace the predict function first, so the timings compare passes
            model.predict(images[:batch_size], batch_size=batch_size, verbose=0)
        total = np.zeros((len(images), model.output_shape[-1]), np.float64)
        t0 = time.perf_counter()
        plain_s = 0.0
        for i, view in enumerate(todo):
            total += model.predict(view(images), batch_size=batch_size, verbose=0)
            if i == 0:
                plain_s = time.perf_counter() - t0
        total_s = time.perf_counter() - t0
    finally:
        if saved is not None:
            bnstats.restore_bn_statistics(model, saved)
    return total, Cost(len(todo), plain_s, total_s, adapt_s)


def predict_proba(model: Any, images: np.ndarray, batch_size: int = 64,
                  tta: bool | str | None = False, adapt_bn: bool = False) -> np.ndarray:
    """:func:`predict_proba_timed` without the cost."""
    return predict_proba_timed(model, images, batch_size, tta, adapt_bn)[0]
