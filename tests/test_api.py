"""The public API (import frozenaug): a build, its datasets and arrays, a run's predictions,
the CLI's options and errors, and the example that trains a user's own Keras model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from build_factory import make_run, read_stamp
from conftest import make_images

import frozenaug as fa
from frozenaug.common.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def api_build(tmp_path_factory: pytest.TempPathFactory) -> fa.Build:
    d = tmp_path_factory.mktemp("api")
    np.savez(d / "in.npz", images=make_images(60, 16, 16, seed=3),
             labels=np.arange(60) % 3, class_names=np.array(["a", "b", "c"]))
    return fa.build(d / "in.npz", d / "B", size=16, epochs=2, policy="light", seed=0, jobs=1,
                    split=(0.6, 0.2, 0.2))


def test_build_describes_itself(api_build: fa.Build) -> None:
    b = fa.open_build(api_build.path)
    assert b.class_names == ["a", "b", "c"] and b.num_classes == 3
    assert b.image_shape == (16, 16, 3) and b.epochs == 2 and b.encoding == "raw"
    assert sum(b.counts("train")) + sum(b.counts("val")) + sum(b.counts("test")) == 60
    w = b.class_weights()
    assert set(w) == {0, 1, 2} and all(v > 0 for v in w.values())
    assert "K=2" in repr(b)


def test_numpy_batches_cover_each_split_once(api_build: fa.Build) -> None:
    for split in ("train", "val", "test"):
        xs, ys = zip(*api_build.batches(split, batch_size=8), strict=True)
        x, y = np.concatenate(xs), np.concatenate(ys)
        assert x.dtype == np.uint8 and x.shape[1:] == (16, 16, 3)
        assert y.shape == (len(x), 3) and np.allclose(y.sum(1), 1)
        assert len(x) == sum(api_build.counts(split))
    images, labels = api_build.arrays("test")
    assert images.shape == (sum(api_build.counts("test")), 16, 16, 3)
    assert np.bincount(labels, minlength=3).tolist() == api_build.counts("test")


def test_dataset_gives_the_numpy_batches_of_each_keras_epoch(tmp_path: Path) -> None:
    """Through the API as through the stream: Keras epoch e reads frozen epoch e mod K."""
    from build_factory import make_build

    b = fa.open_build(make_build(tmp_path, epochs=2, n_per_class=10, size=8))
    ds = b.dataset("train", batch_size=16, seed=5)
    for epoch in range(3):
        got = np.concatenate([x.numpy() for x, _ in ds])
        want = np.concatenate([x for x, _ in b.batches("train", batch_size=16, seed=5,
                                                         epoch=epoch)])
        np.testing.assert_array_equal(got, want)
        assert set(read_stamp(got)[1].tolist()) == {epoch % 2}


def test_options_and_errors_are_the_clis(api_build: fa.Build, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="unknown option.*epoch_count"):
        fa.build(tmp_path / "x.npz", tmp_path / "o", epoch_count=3)
    with pytest.raises(InputError, match=r"^--epochs: must be an integer in 1\.\.10000"):
        fa.build(tmp_path / "x.npz", tmp_path / "o", epochs=0)
    with pytest.raises(InputError, match="not a build directory"):
        fa.open_build(tmp_path / "nothing")
    with pytest.raises(ValueError, match="split must be one of"):
        api_build.counts("holdout")
    assert not (tmp_path / "o").exists()


def test_scan_and_clean_return_their_reports(tmp_path: Path) -> None:
    images = make_images(30, 16, 16, seed=1)
    images[25:] = images[0]  # five copies of one picture: duplicates, one kept
    labels = np.arange(30) % 2
    labels[25:] = labels[0]
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    report = fa.scan(tmp_path / "d.npz", tmp_path / "s", size=16)
    assert (tmp_path / "s" / "scan.png").is_file()
    split = fa.clean(tmp_path / "d.npz", tmp_path / "c", size=16, seed=1)
    assert report["images"] == 30 and report["removed_by_reason"]["duplicate"] == 5
    assert sum(s["count"] for s in split["splits"].values()) == 25  # the copies went


@pytest.mark.slow
def test_load_run_predicts_like_the_cli(tmp_path: Path) -> None:
    run = fa.load_run(make_run(tmp_path, size=16))
    assert len(run.class_names) == 3 and run.image_shape == (16, 16, 3)
    images = make_images(5, 16, 16)
    p = run.predict(images)
    assert p.shape == (5, 3) and np.allclose(p.sum(1), 1, atol=1e-4)
    np.testing.assert_allclose(run.predict(images, tta=True).sum(1), 1, atol=1e-4)
    with pytest.raises(ValueError, match="images must be uint8"):
        run.predict(images.astype(np.float32))


@pytest.mark.slow
def test_example_trains_a_users_own_keras_model(api_build: fa.Build) -> None:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "own_keras_model.py"),
                        str(api_build.path), "--epochs", "2", "--batch-size", "8"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Build(" in p.stdout
    line = p.stdout.strip().splitlines()[-1]
    assert line.startswith("test accuracy ") and line.endswith(
        f"on {sum(api_build.counts('test'))} images")
