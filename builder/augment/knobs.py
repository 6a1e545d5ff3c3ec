"""Bounds of the numeric knobs of our own transforms (augment.ops) and of the mix stage.

Each knob has an upper limit as well as a lower one: ``RandAugment(n=1_000_000_000)`` and
``AugMix(width=10_000_000)`` were accepted and then drew a chain of that length for every image
(7 GB before the first shard). The limits sit far above any published setting (RandAugment
n <= 4, AugMix width 3 and depth <= 3, mixing alphas 0.1-2) and below where the work or the
numbers (Beta/Dirichlet draws with alpha near 0 give NaN) go wrong. A value outside raises a
ValueError naming the transform and key; the policy loader adds the file.
"""

from __future__ import annotations

import math
from typing import Any

from frozenaug.common.errors import brief

MAX_RANDAUGMENT_N = 32  # ops per image
MAX_AUGMIX_WIDTH = 16  # parallel chains
MAX_AUGMIX_DEPTH = 16  # ops per chain
ALPHA_RANGE = (0.01, 100.0)  # Beta/Dirichlet concentrations (AugMix, MixUp, CutMix)
MAX_STAIN_SHIFT = 5.0  # optical density; ln 256 = 5.5 already saturates every pixel
MAX_OPS = 64  # names in an ops list


def int_in(cls: str, key: str, v: Any, lo: int, hi: int, also: tuple[int, ...] = ()) -> int:
    """``v`` as an int in lo..hi (or one of ``also``); a bool is not an int here."""
    if isinstance(v, bool) or not isinstance(v, int) or not (lo <= v <= hi or v in also):
        extra = "".join(f" or {a}" for a in also)
        raise ValueError(f"{cls}: {key} must be an int in {lo}..{hi}{extra}, got {brief(v)}")
    return v


def float_in(cls: str, key: str, v: Any, lo: float, hi: float, *, hi_open: bool = False
             ) -> float:
    """``v`` as a finite float in [lo, hi] (or [lo, hi))."""
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    if ok and lo <= v and (v < hi if hi_open else v <= hi):
        return float(v)
    raise ValueError(f"{cls}: {key} must be a number in [{lo:g}, {hi:g}{')' if hi_open else ']'}"
                     f", got {brief(v)}")


def fill_value(cls: str, fill: int | None) -> int | None:
    if fill is not None and not (isinstance(fill, int) and 0 <= fill <= 255):
        raise ValueError(f"{cls}: fill must be null (reflect) or an int 0..255, got {brief(fill)}")
    return fill


def probability(cls: str, p: float) -> float:
    return float_in(cls, "p", p, 0.0, 1.0)
