"""fit --consistency jsd: the Jensen-Shannon term against a numpy reference, the training loss
on stacked views, and a tiny fit through the console script whose model evaluates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from build_factory import make_build

from frozenaug.trainer.cli import main
from frozenaug.trainer.train.consistency import install, jensen_shannon


def _js_reference(p: np.ndarray) -> np.ndarray:
    """JS as entropy of the mixture minus the mean entropy of the views, (b, V, C) -> (b,)."""
    def entropy(q: np.ndarray) -> np.ndarray:
        return -np.sum(np.where(q > 0, q * np.log(np.where(q > 0, q, 1)), 0), axis=-1)
    return entropy(p.mean(axis=1)) - entropy(p).mean(axis=1)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("views", [2, 3])
def test_jsd_matches_numpy_and_is_zero_only_for_identical_views(views: int) -> None:
    rng = np.random.default_rng(0)
    p = _softmax(rng.normal(0, 2, (16, views, 5))).astype(np.float32)
    p[0, :, :] = [0.5, 0.5, 0, 0, 0]  # zeros: 0 log 0 = 0
    p[1, 0] = [1, 0, 0, 0, 0]
    got = jensen_shannon(tf.constant(p)).numpy()
    np.testing.assert_allclose(got, _js_reference(p.astype(np.float64)), atol=2e-6)
    assert got[0] == pytest.approx(0, abs=1e-7) and (got[1:] > 1e-4).all()
    same = np.repeat(p[:, :1], views, axis=1)
    np.testing.assert_allclose(jensen_shannon(tf.constant(same)).numpy(), 0, atol=1e-7)
    # bounded by log V (disjoint one-hot views reach it)
    apart = np.eye(5, dtype=np.float32)[None, :views]
    assert jensen_shannon(tf.constant(apart)).numpy()[0] == pytest.approx(np.log(views), 1e-5)


def test_training_loss_is_anchor_ce_plus_weighted_jsd() -> None:
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)
    model.compile(loss=loss)
    install(model, views=2, weight=12.0)
    rng = np.random.default_rng(1)
    y = np.repeat(np.eye(3, dtype=np.float32)[rng.integers(0, 3, 6)], 2, axis=0)
    p = _softmax(rng.normal(size=(12, 3))).astype(np.float32)
    sw = rng.uniform(0.5, 2, 12).astype(np.float32)
    got = float(model.compute_loss(None, y, tf.constant(p), tf.constant(sw), training=True))
    anchor = float(loss(y[::2], p[::2], sample_weight=sw[::2]))  # class weights: anchor rows
    jsd = _js_reference(p.reshape(6, 2, 3).astype(np.float64)).mean()
    assert got == pytest.approx(anchor + 12 * jsd, rel=1e-5)
    # identical views: the plain anchor loss; evaluation: the plain loss on every row
    same = np.repeat(p[::2], 2, axis=0)
    assert float(model.compute_loss(None, y, tf.constant(same), None, training=True)) == (
        pytest.approx(float(loss(y[::2], p[::2])), rel=1e-5))
    assert float(model.compute_loss(None, y, tf.constant(p), None, training=False)) == (
        pytest.approx(float(loss(y, p)), rel=1e-5))


FIT = ["--model", "simple_cnn", "--weights", "none", "--epochs-coarse", "2", "--batch-size", "8"]


def _error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("frozenaug-train: error: ") and "\n" not in err, err
    return err


def test_fit_through_the_console_script_and_evaluate(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    build = make_build(tmp_path / "b", epochs=3, n_per_class=8, num_classes=3, size=16)
    run = tmp_path / "run"
    script = Path(sys.executable).parent / "frozenaug-train"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([str(script), "fit", str(build), "--out", str(run), *FIT,
                           "--consistency", "jsd", "--consistency-views", "3",
                           "--consistency-weight", "6"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["consistency"], cfg["consistency_views"], cfg["consistency_weight"]) == (
        "jsd", 3, 6.0)
    model = keras.saving.load_model(run / "model.keras", compile=False)
    assert model.input_shape == (None, 16, 16, 3) and model.output_shape == (None, 3)
    assert main(["evaluate", str(run), "--out", str(tmp_path / "ev")]) == 0
    assert "accuracy" in capsys.readouterr().out
    # the run's config holds it: a resume with another consistency setting is refused
    assert main(["fit", str(build), "--out", str(run), "--resume", "--consistency", "none"]) == 2
    assert "consistency" in _error(capsys)


@pytest.mark.parametrize("args, expected", [
    (["--consistency", "jsd", "--consistency-views", "4"], "consistency_views"),
    (["--consistency", "jsd", "--consistency-weight", "-1"], "consistency_weight"),
    (["--consistency", "jsd", "--mix", "fresh"], "does not support mix fresh"),
    (["--consistency", "jsd", "--consistency-views", "3"], "need 3 frozen epochs"),
])
def test_bad_consistency_options_are_one_line_errors(tmp_path: Path, capsys, args, expected):
    build = make_build(tmp_path / "b", epochs=2, n_per_class=4, num_classes=3, size=16)
    assert main(["fit", str(build), "--out", str(tmp_path / "r"), *FIT, *args]) == 2
    assert expected in _error(capsys)
    assert not (tmp_path / "r").exists()


def test_unknown_consistency_is_a_usage_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["fit", str(tmp_path), "--out", str(tmp_path / "r"), "--consistency", "augmix"])
    assert e.value.code == 2 and "choose from 'none', 'jsd'" in _error(capsys)


def test_frozen_mix_build_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    build = make_build(tmp_path / "b", epochs=2, n_per_class=4, soft_labels=True, size=16)
    assert main(["fit", str(build), "--out", str(tmp_path / "r"), *FIT,
                 "--consistency", "jsd"]) == 2
    assert "--drop-family mix" in _error(capsys)


class _Interrupt(Exception):
    pass


class _StopAfter(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):  # noqa: ANN001, ANN201
        if epoch == 0:
            raise _Interrupt


def test_resume_trains_what_an_uninterrupted_run_trains(tmp_path: Path) -> None:
    from frozenaug.trainer.config import FitConfig
    from frozenaug.trainer.train.fit import fit

    build = make_build(tmp_path / "b", epochs=3, n_per_class=6, num_classes=3, size=16)
    cfg = FitConfig(build_dir=str(build), model="simple_cnn", epochs_coarse=2, batch_size=8,
                    head_units=[8], consistency="jsd", dropout=0.0)
    full = fit(cfg, tmp_path / "full", verbose=0, eager=True)["history"]
    with pytest.raises(_Interrupt):
        fit(cfg, tmp_path / "cut", verbose=0, eager=True, extra_callbacks=[_StopAfter()])
    resumed = fit(cfg, tmp_path / "cut", resume=True, verbose=0, eager=True)["history"]
    assert len(resumed) == len(full) == 2
    for a, b in zip(full, resumed, strict=True):
        for key in ("loss", "ce", "val_ce"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
