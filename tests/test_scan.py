"""Perceptual hash (correctness, robustness), grouping (both pair searches) and classification."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy.fft import dctn

from frozenaug.builder.clean import scan as scan_mod
from frozenaug.builder.clean.phash import area_matrix, hamming, phash
from frozenaug.builder.clean.scan import (
    DEFAULT_THRESHOLD,
    SPLIT_GROUP_MARGIN,
    classify,
    find_groups,
    scan_dataset,
    split_groups,
)
from frozenaug.common.errors import InputError
from frozenaug.data.intake import Dataset


@pytest.fixture(scope="module")
def real_cells(sample_ds) -> np.ndarray:
    """The sample's 1,200 real cells that are in no scan cluster (distinct pictures)."""
    r = scan_dataset(sample_ds)
    alone = np.bincount(r.groups)[r.groups] == 1
    return sample_ds.images[alone]


# --- the hash -------------------------------------------------------------------------------


def _reference_phash(img: np.ndarray) -> int:
    """The textbook pipeline, one image at a time, with cv2 and scipy instead of matrices."""
    gray = img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA)
    low = dctn(small, type=2)[:8, :8].ravel()
    bits = low > np.median(low[1:])
    return int("".join("1" if b else "0" for b in bits), 2)


def test_phash_matches_reference(real_cells: np.ndarray) -> None:
    imgs = real_cells[:60]
    ours = phash(imgs)
    ref = np.array([_reference_phash(im) for im in imgs], dtype=np.uint64)
    assert ours.dtype == np.uint64 and ours.shape == (60,)
    # Float rounding may flip a coefficient sitting exactly at the median, nothing more.
    assert (hamming(ours, ref) <= 2).all() and (ours == ref).mean() > 0.9


def test_area_matrix_is_cv2_inter_area() -> None:
    x = np.random.default_rng(1).random((96, 96)).astype(np.float32)
    a = area_matrix(96, 32)
    np.testing.assert_allclose(a @ x @ a.T, cv2.resize(x, (32, 32),
                                                      interpolation=cv2.INTER_AREA), atol=1e-5)
    np.testing.assert_allclose(area_matrix(20, 32).sum(axis=1), 1.0)  # enlarging too


def test_phash_chunking_threads_and_gray_agree(real_cells: np.ndarray) -> None:
    imgs = real_cells[:50]
    base = phash(imgs, jobs=1)
    np.testing.assert_array_equal(phash(imgs, jobs=2, chunk=7), base)
    gray = imgs[..., 1]
    np.testing.assert_array_equal(phash(gray), phash(np.repeat(gray[..., None], 3, -1)))
    assert phash(imgs[:0]).shape == (0,)
    # 31 AC coefficients above their median, plus DC: every hash has 32 bits set.
    assert (np.bitwise_count(base) == 32).all()


def test_phash_rejects_bad_shape() -> None:
    with pytest.raises(ValueError):
        phash(np.zeros((2, 8, 8, 2), np.uint8))


# --- robustness on real cells (the near-duplicates the scan must catch) ---------------------


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


def _shift(img: np.ndarray, dx: int, dy: int) -> np.ndarray:
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, m, img.shape[1::-1], borderMode=cv2.BORDER_REFLECT)


def test_identical_jpeg_and_brightness_copies_within_threshold(real_cells: np.ndarray) -> None:
    h = phash(real_cells)
    same = phash(real_cells.copy())
    jpeg = phash(np.stack([_jpeg(im, 75) for im in real_cells]))
    bright = phash(np.clip(real_cells.astype(np.int16) + 20, 0, 255).astype(np.uint8))
    assert (hamming(h, same) == 0).all()
    assert (hamming(h, jpeg) <= DEFAULT_THRESHOLD).all()
    # +20 brightness: all but about 1 in 1,000 (docs/SCAN.md), and that one just outside.
    assert (hamming(h, bright) <= DEFAULT_THRESHOLD).mean() > 0.995
    assert hamming(h, bright).max() <= DEFAULT_THRESHOLD + 2
    # ... while distinct cells stay far apart (a hash that ignored the image would pass the
    # lines above): no two are within the threshold, and a typical pair differs in ~half the bits.
    others = hamming(h[:, None], h[None, :])[~np.eye(len(h), dtype=bool)]
    assert others.min() > DEFAULT_THRESHOLD and np.median(others) >= 20


def test_shifted_copies(real_cells: np.ndarray) -> None:
    """A 1-2 pixel shift moves a 96-pixel cell's hash by a few bits: usually, not always,
    within the threshold (see docs/SCAN.md), but nearly always nearer than any other cell."""
    h = phash(real_cells)
    others = hamming(h[:, None], h[None, :])
    np.fill_diagonal(others, 64)
    nearest_other = others.min(axis=1)
    one = hamming(h, phash(np.stack([_shift(im, 1, 0) for im in real_cells])))
    two = hamming(h, phash(np.stack([_shift(im, 2, 0) for im in real_cells])))
    assert (one <= DEFAULT_THRESHOLD).mean() > 0.7
    assert (two <= DEFAULT_THRESHOLD).mean() > 0.25 and np.median(two) <= 6
    assert (two < nearest_other).mean() > 0.98 and (two <= nearest_other).mean() > 0.99
    assert nearest_other.min() > DEFAULT_THRESHOLD  # distinct cells are never within it


def test_scan_groups_jpeg_and_brightness_copies(real_cells: np.ndarray) -> None:
    cells = real_cells[:20]
    imgs = np.concatenate([cells, np.stack([_jpeg(im, 75) for im in cells]),
                           np.clip(cells.astype(np.int16) + 20, 0, 255).astype(np.uint8)])
    groups = find_groups(phash(imgs), DEFAULT_THRESHOLD)
    np.testing.assert_array_equal(groups, np.tile(np.arange(20), 3))


def test_sample_scan_finds_exactly_the_planted_rows(sample_ds) -> None:
    r = scan_dataset(sample_ds)
    s = r.summary()
    assert s["removed_by_reason"] == {"outlier_cluster": 30, "label_conflict": 2,
                                      "duplicate": 1}
    assert s["kept"] == 1201 and s["clusters_by_reason"]["outlier_cluster"] == 2
    conflict = next(c for c in r.clusters if c["reason"] == "label_conflict")
    ids = sorted(sample_ds.ids[i] for i in conflict["members"])
    assert ids == ["eosinophil/12874.jpg", "neutrophil/03069.jpg"]


# --- grouping -------------------------------------------------------------------------------


def test_find_groups_chain_exact_and_numbering() -> None:
    h = np.array([0b1111, 0b0111, 0b0001, 0b1111, 0b111 << 40, 0], dtype=np.uint64)
    # 0-1 at 1 bit, 1-2 at 2 bits (0-2 at 3), 3 == 0, 5 is 1 bit from 2, 4 is 3 from 5.
    np.testing.assert_array_equal(find_groups(h, 2), [0, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(find_groups(h, 0), [0, 1, 2, 0, 3, 4])
    np.testing.assert_array_equal(find_groups(h, 1), [0, 0, 1, 0, 2, 1])
    assert find_groups(np.zeros(0, np.uint64), 4).shape == (0,)
    with pytest.raises(InputError):
        find_groups(h, 64)


def test_split_groups_link_kept_rows_at_the_looser_radius() -> None:
    six, ten = np.uint64(0b111111), np.uint64(0b1111111111 << 20)
    h = np.array([0, six, 0, ten, six | ten], dtype=np.uint64)
    keep = np.array([True, True, False, True, False])
    # 0-1 at 6 bits: apart for the scan (4), together for the split (4 + 4); 3 is 10 bits from
    # 0 (16 from 1); removed rows get -1 and link nothing (4 would have bridged 1 and 3).
    assert SPLIT_GROUP_MARGIN == 4
    np.testing.assert_array_equal(split_groups(h, keep, DEFAULT_THRESHOLD), [0, 0, -1, 1, -1])
    np.testing.assert_array_equal(split_groups(h, keep, 6), [0, 0, -1, 0, -1])  # radius 10


def _clustered_hashes(n_centres: int, per: int, flips: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, 2**63, n_centres, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    h = np.repeat(centres, per)
    for _ in range(flips):
        h ^= np.uint64(1) << rng.integers(0, 64, len(h)).astype(np.uint64)
    h = np.concatenate([h, h[: len(h) // 10]])  # some exact copies too
    return h[rng.permutation(len(h))]


@pytest.mark.parametrize("threshold", [0, 2, 4, 7])
def test_allpairs_and_multi_index_agree(threshold: int, monkeypatch) -> None:
    h = _clustered_hashes(300, 8, 3, seed=threshold)
    expect = find_groups(h, threshold, method="allpairs")
    assert len(np.unique(expect)) < len(h)  # the case is not trivial
    np.testing.assert_array_equal(find_groups(h, threshold, method="mih"), expect)
    # Small tiles, small buckets (the big-bucket path) and a tiny pair buffer (collapsing).
    monkeypatch.setattr(scan_mod, "TILE", 64)
    monkeypatch.setattr(scan_mod, "SMALL_BUCKET", 3)
    monkeypatch.setattr(scan_mod._Links, "FLUSH", 50)
    np.testing.assert_array_equal(find_groups(h, threshold, method="mih"), expect)
    np.testing.assert_array_equal(find_groups(h, threshold, method="allpairs"), expect)


def test_allpairs_matches_brute_force() -> None:
    h = _clustered_hashes(40, 5, 4, seed=9)
    d = hamming(h[:, None], h[None, :]) <= 5
    # Components by repeated boolean matrix closure.
    reach = d.copy()
    while True:
        nxt = (reach.astype(np.int32) @ reach.astype(np.int32)) > 0
        if (nxt == reach).all():
            break
        reach = nxt
    groups = find_groups(h, 5)
    np.testing.assert_array_equal(groups[:, None] == groups[None, :], reach)


# --- classification -------------------------------------------------------------------------


def test_classify_reasons() -> None:
    groups = np.array([0, 1, 1, 2, 2, 3] + [4] * 10 + [5, 1])
    labels = np.array([0, 1, 1, 0, 2, 1] + [0, 1] * 5 + [0, 1])
    keep, removed, clusters = classify(groups, labels, outlier_min=10, class_names=["a", "b",
                                                                                  "c"])
    reasons = dict(removed)
    assert reasons[2] == reasons[17] == "duplicate" and 1 in np.flatnonzero(keep)
    assert reasons[3] == reasons[4] == "label_conflict"
    assert all(reasons[i] == "outlier_cluster" for i in range(6, 16))
    assert keep.tolist() == [True, True, False, False, False, True] + [False] * 10 + [True,
                                                                                       False]
    by = {c["reason"]: c for c in clusters}
    assert by["duplicate"]["members"] == [1, 2, 17] and by["duplicate"]["size"] == 3
    assert by["label_conflict"]["labels"] == {"a": 1, "c": 1}
    assert by["outlier_cluster"]["members"] is None and by["outlier_cluster"]["size"] == 10
    assert [r for r, _ in removed] == sorted(r for r, _ in removed)


def test_scan_dataset_classifies_images(real_cells: np.ndarray) -> None:
    cells = real_cells[:16]
    outlier = np.repeat(cells[:1], 12, axis=0)  # one picture x12, mixed labels
    imgs = np.concatenate([cells[1:], outlier, cells[2:3], cells[3:4]])
    labels = np.r_[np.arange(15) % 3, np.arange(12) % 3, 1, 1]  # 27 dup of 1, 28 clash with 2
    ds = Dataset(imgs, labels.astype(np.int64), ["a", "b", "c"], "mem",
                 [str(i) for i in range(len(labels))])
    r = scan_dataset(ds, outlier_min=10)
    s = r.summary()
    assert s["removed_by_reason"] == {"outlier_cluster": 12, "label_conflict": 2,
                                      "duplicate": 1}
    assert s["kept"] == len(labels) - 15 and r.keep[1] and not r.keep[27] and not r.keep[2]
    # A higher outlier_min turns the 12 copies (mixed labels) into a label conflict.
    s2 = scan_dataset(ds, outlier_min=13).summary()
    assert s2["removed_by_reason"]["label_conflict"] == 14
    with pytest.raises(InputError, match="--outlier-min"):
        scan_dataset(ds, outlier_min=1)
    with pytest.raises(InputError, match="--threshold"):
        scan_dataset(ds, threshold=64)
