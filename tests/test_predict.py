"""predict: CSV of id, class and per-class probabilities from a build split or an npz."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from build_factory import make_run

from frozenaug.common.errors import InputError
from frozenaug.trainer.assess.predict import predict, write_predictions


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("pr"))


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_build_split_and_npz(run, tmp_path):
    n = predict(run, str(run.parent / "b"), tmp_path / "p.csv", split="test", batch_size=4)
    rows = _rows(tmp_path / "p.csv")
    assert n == len(rows) == 6
    assert list(rows[0]) == ["id", "class", "class0", "class1", "class2"]
    assert all(r["id"].startswith("test/") for r in rows) and len({r["id"] for r in rows}) == 6
    for r in rows:
        p = np.array([float(r[c]) for c in ("class0", "class1", "class2")])
        assert p.sum() == pytest.approx(1, abs=1e-4)
        assert r["class"] == f"class{int(p.argmax())}"

    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "x.npz", images=images, labels=np.array([0, 1, 2, 0, 1]))
    assert predict(run, str(tmp_path / "x.npz"), tmp_path / "q.csv") == 5
    assert [r["id"] for r in _rows(tmp_path / "q.csv")] == ["0", "1", "2", "3", "4"]


def test_predict_errors(run, tmp_path):
    with pytest.raises(InputError, match="batch-size"):
        predict(run, str(run.parent / "b"), tmp_path / "p.csv", batch_size=0)
    with pytest.raises(InputError, match="model.keras"):
        predict(tmp_path, str(run.parent / "b"), tmp_path / "p.csv")
    with pytest.raises(InputError, match="no such file"):
        predict(run, str(tmp_path / "missing.npz"), tmp_path / "p.csv")
    assert not (tmp_path / "p.csv").exists()


def test_write_predictions_is_plain_csv(tmp_path):
    write_predictions(tmp_path / "w.csv", ["a/1.png", "b,2.png"],
                      np.array([[0.25, 0.75], [0.9, 0.1]]), ["neg", "pos"])
    rows = _rows(tmp_path / "w.csv")
    assert rows[1] == {"id": "b,2.png", "class": "neg", "neg": "0.900000", "pos": "0.100000"}


def test_predict_unlabelled_folder_and_npz(run, tmp_path):
    import cv2

    from frozenaug.trainer.assess.evaluate import load_run
    from frozenaug.trainer.assess.tta import predict_proba

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    folder = tmp_path / "new"
    folder.mkdir()
    for i, img in enumerate(images):  # PNG is lossless: the same pixels come back
        cv2.imwrite(str(folder / f"img{i}.png"), img[..., ::-1])
    assert predict(run, str(folder), tmp_path / "f.csv") == 3
    rows = _rows(tmp_path / "f.csv")
    assert [r["id"] for r in rows] == ["img0.png", "img1.png", "img2.png"]
    expected = predict_proba(load_run(run).model, images, 4)
    got = np.array([[float(r[c]) for c in ("class0", "class1", "class2")] for r in rows])
    np.testing.assert_allclose(got, expected, atol=1e-5)

    np.savez(tmp_path / "u.npz", images=images.astype(np.float32) / 255.0)  # float, no labels
    assert predict(run, str(tmp_path / "u.npz"), tmp_path / "u.csv") == 3
    got = np.array([[float(r[c]) for c in ("class0", "class1", "class2")]
                    for r in _rows(tmp_path / "u.csv")])
    np.testing.assert_allclose(got, expected, atol=1e-5)

    (folder / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="broken.png: unreadable image"):
        predict(run, str(folder), tmp_path / "g.csv")
    assert not (tmp_path / "g.csv").exists()
