"""Test-time augmentation (8 dihedral views) and --adapt-bn through evaluate and predict."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from build_factory import make_run

keras = pytest.importorskip("keras")

from frozenaug.trainer.assess.evaluate import evaluate  # noqa: E402
from frozenaug.trainer.assess.predict import predict  # noqa: E402
from frozenaug.trainer.assess.tta import DIHEDRAL, predict_proba, predict_proba_timed, views  # noqa: E402
from frozenaug.trainer.cli import main as cli_main  # noqa: E402


def _model(invariant: bool, shape=(8, 8, 3)) -> keras.Model:
    """Global average pooling is exactly invariant under every permutation of pixels, so
    under the dihedral group too; Flatten is not."""
    keras.utils.set_random_seed(0)
    inp = keras.Input(shape, dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inp)
    x = keras.layers.Conv2D(4, 1)(x)
    x = keras.layers.BatchNormalization()(x)
    x = (keras.layers.GlobalAveragePooling2D() if invariant else keras.layers.Flatten())(x)
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)


def test_views_are_the_eight_symmetries_of_the_square(images):
    outs = {v(images[:1]).tobytes() for v in DIHEDRAL}
    assert len(outs) == 8 and len(views(images.shape)) == 8
    assert np.array_equal(DIHEDRAL[0](images), images)
    assert len(views((2, 8, 6, 3))) == 4
    assert all(v(np.zeros((2, 8, 6, 3), np.uint8)).shape == (2, 8, 6, 3)
               for v in views((2, 8, 6, 3)))


def test_tta_on_an_invariant_model_changes_nothing(images):
    model = _model(invariant=True)
    plain = predict_proba(model, images, 4)
    np.testing.assert_allclose(predict_proba(model, images, 4, tta=True), plain, atol=1e-6)


def test_tta_is_the_mean_over_views(images):
    model = _model(invariant=False)
    plain = predict_proba(model, images, 4)
    tta, cost = predict_proba_timed(model, images, 4, tta=True)
    assert not np.allclose(tta, plain, atol=1e-4)
    manual = np.mean([model.predict(v(images), verbose=0) for v in DIHEDRAL], axis=0)
    np.testing.assert_allclose(tta, manual, atol=1e-6)
    np.testing.assert_allclose(tta.sum(1), 1, atol=1e-5)
    assert cost.views == 8 and cost.total_s >= cost.plain_s > 0 and "8 views" in cost.describe()
    assert predict_proba(model, images[:0], 4, tta=True).shape == (0, 3)
    rect = _model(invariant=False, shape=(8, 6, 3))
    assert predict_proba(rect, images[:, :, :6].copy(), 4, tta=True).shape == (10, 3)


def test_adapt_bn_predicts_with_target_statistics_and_restores_them(images):
    model = _model(invariant=True)
    bn = [la for la in model.layers if isinstance(la, keras.layers.BatchNormalization)][0]
    before = bn.moving_mean.numpy().copy()
    plain = predict_proba(model, images, 4)
    adapted, cost = predict_proba_timed(model, images, 4, adapt_bn=True)
    assert cost.adapt_s > 0 and not np.allclose(adapted, plain, atol=1e-4)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), before)  # put back
    np.testing.assert_array_equal(predict_proba(model, images, 4), plain)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("tta"))


def _digest(run) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.iterdir()
            if p.is_file()}


def test_evaluate_and_predict_with_tta_and_adapt_bn(run, tmp_path, capsys):
    files = _digest(run)
    m = evaluate(run, None, tmp_path / "ev", distort_=True, severities=1, batch_size=4,
                 tta=True, adapt_bn=True)
    assert m["tta"] and m["adapt_bn"] and m["cost"]["views"] == 8 and m["cost"]["adapt_s"] > 0
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["cost"]["total_s"] >= saved["cost"]["plain_s"]
    assert len(saved["robustness"]["results"]) == 6
    n = predict(run, str(run.parent / "b"), tmp_path / "p.csv", batch_size=4, tta=True,
                adapt_bn=True, report=print)
    assert n == 6 and "tta: 8 views" in capsys.readouterr().out
    assert cli_main(["evaluate", str(run), "--out", str(tmp_path / "cli"), "--tta",
                     "--adapt-bn", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "tta: 8 views" in out and "adapt-bn:" in out and "x)" in out
    assert _digest(run) == files  # model.keras and the rest untouched


def test_d8_adds_the_dihedral_views_turned_by_45_degrees():
    import cv2

    x = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    d8 = views(x.shape, "d8")
    assert len(views(x.shape, True)) == 8 and len(d8) == 16
    for plain, view in zip(DIHEDRAL, d8[:8], strict=True):
        np.testing.assert_array_equal(view(x), plain(x))
    turned = cv2.warpAffine(x[1], cv2.getRotationMatrix2D((8, 8), 45, 1.0), (16, 16),
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    np.testing.assert_array_equal(d8[8](x)[1], turned)
    np.testing.assert_array_equal(d8[9](x)[1], np.rot90(turned, 1))
    assert len(views((2, 16, 8, 3), "d8")) == 8  # not square: 4 symmetries, each turned too
