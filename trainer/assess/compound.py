"""Compound distortions: several kinds of damage on one image, the robustness headline.

Real damage compounds (a stain change, then a blurred, unevenly lit capture, then JPEG), and
one family at a time is a far easier test: a model measured at 0.91 under single strong
distortions fell to 0.61 on real cells with several at once. Every image here gets its own
composition of 2-5 distinct families from ``SUITE`` (the six of distort.py plus the held-out
families of heldout.py, which no training preset has), each at severity 3-5, applied in a
random order.

Seeded per image: the composition of image ``i`` (which families, their order and
severities) and every random choice inside each family come from
``numpy.random.default_rng([seed, crc32("compound"), i, ...])``, so an image's damage depends
on (seed, i) alone, never on the batch or the other images. Nothing here is tuned against a
model: the suite is fixed by its seed.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from frozenaug.trainer.assess.distort import FAMILIES
from frozenaug.trainer.assess.heldout import HELD_OUT

SUITE = {**FAMILIES, **HELD_OUT}
HELD_OUT_NAMES = tuple(HELD_OUT)  # marked "*" in tables: no training preset has them
MIN_FAMILIES, MAX_FAMILIES = 2, 5
MIN_SEVERITY, MAX_SEVERITY = 3, 5
_TAG = zlib.crc32(b"compound")


@dataclass(frozen=True)
class Recipe:
    """One image's composition: the families in the order applied, each with its severity."""

    families: tuple[str, ...]
    severities: tuple[int, ...]


def recipe(seed: int, index: int) -> Recipe:
    """The composition of image ``index`` under ``seed``: 2-5 distinct families of SUITE in a
    random order, each at a severity of 3-5."""
    rng = np.random.default_rng([seed, _TAG, index])
    names = tuple(SUITE)
    count = int(rng.integers(MIN_FAMILIES, MAX_FAMILIES + 1))
    order = rng.permutation(len(names))[:count]
    sev = rng.integers(MIN_SEVERITY, MAX_SEVERITY + 1, count)
    return Recipe(tuple(names[j] for j in order), tuple(int(v) for v in sev))


def compound(images: np.ndarray, seed: int = 0, start: int = 0
             ) -> tuple[np.ndarray, list[Recipe]]:
    """Each uint8 ``(N, H, W, 3)`` image damaged by its own composition, and the compositions.

    ``start``: the index of ``images[0]`` in the whole set, so that a set distorted in pieces
    gives the same images as in one call."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N,H,W,3) uint8, got {images.shape} {images.dtype}")
    out = np.empty_like(images)
    recipes = []
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # at 96 px OpenCV's thread start-up costs more than the work
    try:
        for i in range(len(images)):
            index = start + i
            r = recipe(seed, index)
            y = images[i : i + 1]
            for step, (family, sev) in enumerate(zip(r.families, r.severities, strict=True)):
                y = SUITE[family](y, sev, np.random.default_rng([seed, _TAG, index, step + 1]))
            out[i] = y[0]
            recipes.append(r)
    finally:
        cv2.setNumThreads(threads)
    return out, recipes


def describe() -> dict[str, Any]:
    """What the suite is, for metrics.json."""
    return {"families": list(SUITE), "held_out": list(HELD_OUT_NAMES),
            "families_per_image": [MIN_FAMILIES, MAX_FAMILIES],
            "severities": [MIN_SEVERITY, MAX_SEVERITY]}


def breakdown(correct: np.ndarray, recipes: Sequence[Recipe]) -> dict[str, Any]:
    """Accuracy over the images whose composition includes each family (``with``; a
    leave-one-family-out run is judged on its held-out family's share), and by the number of
    families composed (``by_count``)."""
    correct = np.asarray(correct, bool)

    def part(mask: np.ndarray) -> dict[str, float | int]:
        n = int(mask.sum())
        return {"accuracy": float(correct[mask].mean()) if n else 0.0, "images": n}

    return {
        "with": {f: part(np.array([f in r.families for r in recipes], bool)) for f in SUITE},
        "by_count": {str(k): part(np.array([len(r.families) == k for r in recipes], bool))
                     for k in range(MIN_FAMILIES, MAX_FAMILIES + 1)},
    }


def label(family: str) -> str:
    """A family's name in tables, ``*`` marking one held out of training by construction."""
    return family + ("*" if family in HELD_OUT_NAMES else "")


def format_compound(c: dict[str, Any]) -> str:
    """The compound section of evaluate's printed table."""
    lines = [f"compound: {c['families_per_image'][0]}-{c['families_per_image'][1]} families "
             f"per image at severity {c['severities'][0]}-{c['severities'][1]}, seed "
             f"{c['seed']} (* held out of every training preset)",
             f"{'compound':<12}{c['accuracy']:>8.3f}   macro F1 {c['macro_f1']:.3f}   "
             f"({c['samples']} images)",
             f"{'images with':<15}{'accuracy':>9}{'images':>8}"]
    lines += [f"  {label(f):<13}{v['accuracy']:>9.3f}{v['images']:>8}"
              for f, v in c["with"].items()]
    lines.append("by families: " + "  ".join(f"{k}: {v['accuracy']:.3f} ({v['images']})"
                                            for k, v in c["by_count"].items()))
    return "\n".join(lines)
