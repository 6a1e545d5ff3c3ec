"""clean_dataset's outputs and the scan/clean commands (exit codes, files, nothing on error)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_images

from frozenaug.builder.clean.cleaning import clean_dataset
from frozenaug.builder.clean.phash import hamming, phash
from frozenaug.builder.clean.scan import DEFAULT_THRESHOLD, SPLIT_GROUP_MARGIN, scan_dataset
from frozenaug.common.errors import InputError
from frozenaug.data.intake import Dataset, load_dataset


def test_clean_dataset_on_sample(sample_ds, tmp_path: Path) -> None:
    res = clean_dataset(sample_ds, tmp_path, seed=1)
    removed = {i for i, _ in res.scan.removed}
    rows = np.concatenate(list(res.splits.values()))
    assert len(rows) == 1201 and len(set(rows.tolist())) == 1201 and not removed & set(rows)
    scan = json.loads((tmp_path / "scan.json").read_text())
    assert scan["removed_count"] == 33 and len(scan["removed"]) == 33
    assert scan["removed_by_reason"] == {"outlier_cluster": 30, "label_conflict": 2,
                                         "duplicate": 1}
    assert {"index", "id", "reason", "cluster"} == set(scan["removed"][0])
    assert scan["threshold"] == 4 and scan["outlier_min"] == 10
    assert {c["reason"] for c in scan["clusters"]} == {"outlier_cluster", "label_conflict",
                                                      "duplicate"}
    assert (tmp_path / "scan.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    split = json.loads((tmp_path / "split.json").read_text())
    assert split["seed"] == 1 and split["fractions"] == [0.64, 0.16, 0.2]
    for name, rows in res.splits.items():
        assert split["splits"][name]["indices"] == rows.tolist()
        assert sum(split["splits"][name]["class_counts"]) == len(rows)
    assert not list(tmp_path.glob(".tmp-*"))


def test_split_keeps_two_photos_of_a_cell_together(sample_ds, tmp_path: Path) -> None:
    """A cell photographed twice, 2 pixels apart: too far apart for the scan to remove one,
    near enough that the split must not put one in train and the other in test."""
    r = scan_dataset(sample_ds)
    alone = np.flatnonzero(np.bincount(r.groups)[r.groups] == 1)[:200]
    cells = sample_ds.images[alone]
    shifted = np.roll(cells, 2, axis=2)
    d = hamming(phash(cells), phash(shifted))
    near = np.flatnonzero((d > DEFAULT_THRESHOLD) & (d <= DEFAULT_THRESHOLD + SPLIT_GROUP_MARGIN))
    assert len(near) >= 40  # enough pairs that chance alone would split some
    n = len(cells)
    ds = Dataset(np.concatenate([cells, shifted]), np.tile(sample_ds.labels[alone], 2),
                 sample_ds.class_names, "pairs", [str(i) for i in range(2 * n)], None)
    res = clean_dataset(ds, tmp_path, fractions=(0.5, 0.25, 0.25), seed=0)
    split_of = {int(row): name for name, rows in res.splits.items() for row in rows}
    assert all(i in split_of and i + n in split_of for i in near)  # both kept
    assert [i for i in near if split_of[i] != split_of[i + n]] == []
    assert abs(len(res.splits["train"]) / len(split_of) - 0.5) < 0.05  # still stratified


def test_no_scan_keeps_everything(sample_ds, tmp_path: Path) -> None:
    res = clean_dataset(sample_ds, tmp_path, scan=False)
    assert res.scan is None and sum(len(r) for r in res.splits.values()) == len(sample_ds)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split.json"]


def test_medmnist_official_split_minus_removed(tmp_path: Path) -> None:
    imgs = make_images(9, 32, 32)
    imgs[8] = imgs[0]  # a duplicate, in the test split: removed
    official = np.array(["train"] * 5 + ["val"] * 2 + ["test"] * 2)
    ds = Dataset(imgs, np.array([0, 1, 0, 1, 0, 1, 0, 1, 0]), ["a", "b"], "m.npz",
                 [str(i) for i in range(9)], official)
    res = clean_dataset(ds, tmp_path, medmnist_split=True)
    assert res.splits["train"].tolist() == [0, 1, 2, 3, 4]
    assert res.splits["val"].tolist() == [5, 6] and res.splits["test"].tolist() == [7]
    assert json.loads((tmp_path / "split.json").read_text())["fractions"] is None
    ds.official_split = None
    with pytest.raises(InputError, match="--medmnist-split"):
        clean_dataset(ds, tmp_path / "x", medmnist_split=True)
    assert not (tmp_path / "x").exists()


def test_cli_clean_and_scan(sample_dir: Path, tmp_path: Path, run_cli) -> None:
    code, out, _ = run_cli("clean", sample_dir, "--out", tmp_path / "c", "--seed", "2",
                           "--split", "0.8,0,0.2")
    assert code == 0 and "outlier_cluster 30" in out and "val 0" in out
    cleaned = load_dataset(tmp_path / "c" / "cleaned.npz")
    assert len(cleaned) == 1201 and cleaned.class_names[0] == "basophil"
    z = np.load(tmp_path / "c" / "cleaned.npz")
    assert set(z["split"].tolist()) == {"train", "test"}
    assert z["source_index"].tolist() == sorted(z["source_index"].tolist())
    code, out, _ = run_cli("scan", sample_dir, "--out", tmp_path / "s", "--threshold", "0")
    assert code == 0 and "threshold 0" in out
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["scan.json", "scan.png"]


@pytest.mark.parametrize("flags", [["--split", "0.5,0.6,0.1"], ["--size", "0"],
                                   ["--threshold", "64"], ["--outlier-min", "1"],
                                   ["--jobs", "0"], ["--seed", "-1"], ["--classes", "a,a"]])
def test_cli_bad_flags_exit_2(tiny_npz: Path, tmp_path: Path, run_cli, flags) -> None:
    out = tmp_path / "out"
    code, _, err = run_cli("clean", tiny_npz, "--out", out, *flags)
    assert code == 2 and err.startswith("frozenaug-build: error: ") and not out.exists()


def test_cli_missing_input_exit_2(tmp_path: Path, run_cli) -> None:
    code, _, err = run_cli("scan", tmp_path / "nope.npz", "--out", tmp_path / "o")
    assert code == 2 and "no such file" in err and not (tmp_path / "o").exists()
