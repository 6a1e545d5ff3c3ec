"""Stratified, seeded, leakage-free train/val/test split.

Rows of one group always land in the same split, so no picture is trained on and tested on.
The groups come from the scan (``clean.scan.split_groups``): the rows it kept, linked at a
looser radius than the one it removed duplicates at, so two photos of one cell (say shifted by
two pixels) stay on one side. A group whose rows disagree on the label is dealt out with the
class most of its rows have (ties: the lowest label). Within each class the groups are
shuffled with the seed and dealt out in order: a group goes to the split whose share of the
class its midpoint falls in, which gives every class the requested fractions to within one
group. Without a scan (``--no-clean``) every row is its own group.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from frozenaug.common.errors import InputError, brief
from frozenaug.format.schema import SPLITS

DEFAULT_FRACTIONS: tuple[float, float, float] = (0.64, 0.16, 0.2)


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Three finite, non-negative numbers summing to 1 (to 1e-6), with a non-empty train share."""
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        raise InputError(f"split fractions {brief(fractions)}: not numbers") from None
    if len(values) != 3:
        raise InputError(f"split fractions {brief(fractions)}: need 3 (train, val, test)")
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise InputError(f"split fractions {values}: must be non-negative numbers")
    if abs(sum(values) - 1.0) > 1e-6:
        raise InputError(f"split fractions {values}: sum to {sum(values):g}, not 1")
    if values[0] == 0:
        raise InputError(f"split fractions {values}: the train fraction must be above 0")
    return values  # type: ignore[return-value]


def parse_fractions(s: str | None) -> tuple[float, float, float]:
    """``"0.64,0.16,0.2"`` -> (0.64, 0.16, 0.2); ``None`` -> the default."""
    if s is None:
        return DEFAULT_FRACTIONS
    parts = [p.strip() for p in str(s).split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise InputError(f"{brief(s)}: expected train,val,test fractions like 0.64,0.16,0.2"
                         ) from None
    return check_fractions(values)


def _group_labels(labels: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray]:
    """Dense group ids, and per group: its majority label (ties: lowest) and its size."""
    _, dense = np.unique(groups, return_inverse=True)
    dense = dense.ravel()
    n_groups = int(dense.max()) + 1 if len(dense) else 0
    n_classes = int(labels.max()) + 1 if len(labels) else 0
    votes = np.zeros((n_groups, n_classes), np.int64)
    np.add.at(votes, (dense, labels), 1)
    return dense, votes.argmax(axis=1), votes.sum(axis=1)


def split_indices(
    labels: np.ndarray,
    groups: np.ndarray | None = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Split rows into train/val/test: ``{"train": rows, "val": rows, "test": rows}`` sorted.

    Args:
        labels: (N,) integer class per row.
        groups: (N,) group id per row (rows of a group stay together); None: all singletons.
        fractions: train, val, test shares, summing to 1.
        seed: the shuffle seed; equal arguments give equal splits.

    Raises:
        InputError: bad fractions, or labels and groups of different lengths.
    """
    fr = check_fractions(fractions)
    labels = np.asarray(labels, dtype=np.int64).ravel()
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups).ravel()
    if len(groups) != len(labels):
        raise InputError(f"split: {len(groups)} group ids for {len(labels)} labels")
    if len(labels) and labels.min() < 0:
        raise InputError("split: negative label")
    dense, group_label, group_size = _group_labels(labels, groups)
    rng = np.random.default_rng(seed)
    bounds = np.cumsum(fr)[:2]
    assign = np.empty(len(group_size), np.int64)
    for c in np.unique(group_label):
        gs = np.flatnonzero(group_label == c)
        gs = gs[rng.permutation(len(gs))]
        sizes = group_size[gs]
        mid = (np.cumsum(sizes) - sizes / 2) / sizes.sum()  # each group's midpoint share
        assign[gs] = np.searchsorted(bounds, mid, side="right")
    row_split = assign[dense] if len(dense) else np.zeros(0, np.int64)
    return {name: np.flatnonzero(row_split == k).astype(np.int64)
            for k, name in enumerate(SPLITS)}
