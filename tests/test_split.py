"""Split: fractions checked, per-class stratification, seeding, groups never straddle splits."""

from __future__ import annotations

import numpy as np
import pytest

from frozenaug.builder.clean.split import DEFAULT_FRACTIONS, parse_fractions, split_indices
from frozenaug.common.errors import InputError


def _check_partition(splits: dict[str, np.ndarray], n: int) -> None:
    assert list(splits) == ["train", "val", "test"]
    rows = np.concatenate(list(splits.values()))
    assert np.array_equal(np.sort(rows), np.arange(n))  # disjoint and complete
    for r in splits.values():
        assert r.dtype == np.int64 and np.array_equal(r, np.sort(r))


def test_stratified_per_class() -> None:
    labels = np.repeat(np.arange(4), [100, 37, 250, 5])
    splits = split_indices(labels, None, DEFAULT_FRACTIONS, seed=3)
    _check_partition(splits, len(labels))
    for c, n in enumerate([100, 37, 250, 5]):
        for name, f in zip(("train", "val", "test"), DEFAULT_FRACTIONS, strict=True):
            got = int((labels[splits[name]] == c).sum())
            assert abs(got - f * n) <= 1, (c, name, got)


def test_groups_never_straddle_and_stay_stratified() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    groups = rng.integers(0, 700, n)  # groups of ~3 rows
    labels = rng.integers(0, 3, 700)[groups]  # a group shares one label
    splits = split_indices(labels, groups, (0.7, 0.1, 0.2), seed=1)
    _check_partition(splits, n)
    owner = {}
    for name, rows in splits.items():
        for g in np.unique(groups[rows]):
            assert owner.setdefault(g, name) == name
    for name, f in (("train", 0.7), ("val", 0.1), ("test", 0.2)):
        assert abs(len(splits[name]) / n - f) < 0.02


def test_mixed_label_group_follows_its_majority() -> None:
    # Rows 0-2 are one group labelled 1, 2, 2: its majority is class 2 (not its first or lowest
    # label, 1). It is class 2's only group, so its midpoint share is 0.5, which with these
    # fractions is always val; dealt as class 1 it would be one of 21 shuffled class-1 groups.
    labels = np.r_[[1, 2, 2], np.repeat([0, 1], 20)]
    groups = np.r_[[0, 0, 0], np.arange(1, 41)]
    for seed in range(20):
        splits = split_indices(labels, groups, (0.4, 0.2, 0.4), seed=seed)
        _check_partition(splits, len(labels))
        assert {0, 1, 2} <= set(splits["val"].tolist()), seed
        for c in (0, 1):  # the singletons are dealt per class as usual: 8, 4, 8 of 20
            got = [int((labels[rows[rows > 2]] == c).sum()) for rows in splits.values()]
            assert got == [8, 4, 8], (seed, c, got)
    # A tie goes to the lowest label: rows 0-1 (labels 2, 1) are class 1's only group.
    labels = np.r_[[2, 1], np.repeat([0, 2], 20)]
    groups = np.r_[[0, 0], np.arange(1, 41)]
    for seed in range(20):
        splits = split_indices(labels, groups, (0.4, 0.2, 0.4), seed=seed)
        assert {0, 1} <= set(splits["val"].tolist()), seed


def test_seeded_and_zero_fractions() -> None:
    labels = np.arange(300) % 3
    a = split_indices(labels, None, DEFAULT_FRACTIONS, seed=5)
    b = split_indices(labels, None, DEFAULT_FRACTIONS, seed=5)
    c = split_indices(labels, None, DEFAULT_FRACTIONS, seed=6)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["train"], c["train"])
    d = split_indices(labels, None, (0.8, 0.0, 0.2), seed=0)
    assert len(d["val"]) == 0 and len(d["train"]) == 240 and len(d["test"]) == 60
    assert len(split_indices(labels, None, (1, 0, 0))["train"]) == 300


@pytest.mark.parametrize("bad", [(0.5, 0.5), (0.5, 0.3, 0.3), (-0.1, 0.6, 0.5),
                                 (0.0, 0.5, 0.5), (float("nan"), 0.5, 0.5), ("a", 1, 0)])
def test_bad_fractions(bad) -> None:
    with pytest.raises(InputError):
        split_indices(np.zeros(4, np.int64), None, bad)


def test_parse_fractions() -> None:
    assert parse_fractions(None) == DEFAULT_FRACTIONS
    assert parse_fractions("0.7, 0.1,0.2") == (0.7, 0.1, 0.2)
    for bad in ("0.7,0.3", "a,b,c", "0.5,0.5,0.5", ""):
        with pytest.raises(InputError):
            parse_fractions(bad)


def test_length_mismatch() -> None:
    with pytest.raises(InputError, match="group ids"):
        split_indices(np.zeros(4, np.int64), np.zeros(3, np.int64))
