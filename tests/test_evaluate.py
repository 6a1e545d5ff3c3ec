"""Metrics against hand-computed cases, distortions, and evaluate end to end on a tiny run."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from build_factory import make_build

from frozenaug.common.errors import InputError
from frozenaug.trainer.assess.compound import compound
from frozenaug.trainer.assess.distort import FAMILIES, distort
from frozenaug.trainer.assess.evaluate import (
    confusion_matrix,
    evaluate,
    format_robustness,
    load_inputs,
    load_run,
    metrics_from_confusion,
    score,
)
from frozenaug.trainer.assess.tta import predict_proba
from frozenaug.trainer.config import FitConfig
from frozenaug.trainer.train.fit import fit


def test_confusion_matrix_and_metrics_by_hand():
    y_true = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    y_pred = [0, 0, 1, 1, 2, 2, 2, 2, 0]
    cm = confusion_matrix(y_true, y_pred, 4)
    assert cm.tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [1, 0, 3, 0], [0, 0, 0, 0]]
    m = metrics_from_confusion(cm, ["a", "b", "c", "d"])
    assert m["accuracy"] == pytest.approx(6 / 9)
    # a: P 2/3 R 2/3 F1 2/3; b: P 1/2 R 1/2 F1 1/2; c: P 3/4 R 3/4 F1 3/4; d absent
    assert m["per_class"]["a"] == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert m["per_class"]["b"]["f1"] == pytest.approx(0.5)
    assert m["per_class"]["c"]["precision"] == pytest.approx(0.75)
    assert m["per_class"]["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 3 / 4) / 3)  # d is in neither
    # A class predicted but never true counts in the macro average with F1 0.
    m2 = metrics_from_confusion(confusion_matrix([0, 0], [0, 1], 2), ["a", "b"])
    assert m2["per_class"]["a"]["f1"] == pytest.approx(2 / 3)
    assert m2["macro_f1"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        confusion_matrix([0, 3], [0, 1], 3)


def test_distortions_are_deterministic_and_change_images():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    x = np.stack([cv2.GaussianBlur(i, (0, 0), 2) for i in x])  # smooth, like cell images
    for family in FAMILIES:
        a, b = distort(x, family, 3, seed=1), distort(x, family, 3, seed=1)
        assert a.shape == x.shape and a.dtype == np.uint8
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, x), family
        assert not np.array_equal(a, distort(x, family, 3, seed=2)), family
        mild = np.abs(distort(x, family, 1, 1).astype(int) - x).mean()
        strong = np.abs(distort(x, family, 5, 1).astype(int) - x).mean()
        assert strong > mild, family
    with pytest.raises(ValueError):
        distort(x, "fog", 1)
    with pytest.raises(ValueError):
        distort(x, "blur", 6)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ev")
    build = make_build(root / "b", n_per_class=6, num_classes=3, size=32, test_per_class=3)
    cfg = FitConfig(build_dir=str(build), model="simple_cnn", weights="none", epochs_coarse=2,
                    epochs_fine=0, batch_size=8, head_units=[16], lr=3e-3)
    fit(cfg, root / "run", verbose=0, eager=True)
    return root / "run"


def test_evaluate_build_dir_with_distortions(run, tmp_path):
    m = evaluate(run, None, tmp_path / "ev", distort_=True, severities=2, batch_size=4)
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["accuracy"] == pytest.approx(m["accuracy"])
    assert (tmp_path / "ev" / "confusion.png").stat().st_size > 1000
    assert m["samples"] == 9 and np.array(m["confusion_matrix"]).sum() == 9
    assert set(m["per_class"]) == {"class0", "class1", "class2"}
    rob = saved["robustness"]
    assert set(rob["results"]) == set(FAMILIES) and rob["severities"] == [1, 2]
    # Each cell is the accuracy on exactly that distortion of the test images, nothing else.
    r = load_run(run)
    inputs = load_inputs(r, None, "test")
    for family, row in rob["results"].items():
        for sev in (1, 2):
            proba = predict_proba(r.model, distort(inputs.images, family, sev, 0), 4)
            want = score(inputs.labels, proba, r.class_names)["accuracy"]
            assert row[str(sev)]["accuracy"] == pytest.approx(want), (family, sev)
    table = format_robustness(m["accuracy"], rob)
    assert "geometric" in table and "sev 2" in table

    # The compound suite: every test image its own 2-5 families, scored as a whole.
    c = rob["compound"]
    assert c["held_out"] == ["illumination", "optics"] and set(c["held_out"]) <= set(c["families"])
    assert c["families_per_image"] == [2, 5] and c["severities"] == [3, 5] and c["seed"] == 0
    images, recipes = compound(inputs.images, 0)
    proba = predict_proba(r.model, images, 4)
    want = score(inputs.labels, proba, r.class_names)
    assert (c["accuracy"], c["macro_f1"], c["samples"]) == (
        pytest.approx(want["accuracy"]), pytest.approx(want["macro_f1"]), 9)
    for family, part in c["with"].items():
        assert part["images"] == sum(family in x.families for x in recipes), family
    assert sum(v["images"] for v in c["by_count"].values()) == 9
    assert "compound" in table and "illumination*" in table and "optics*" in table
    # another batch size, the same draw and the same answer
    other = evaluate(run, None, tmp_path / "ev8", distort_=True, severities=1, batch_size=8)
    assert other["robustness"]["compound"]["accuracy"] == pytest.approx(c["accuracy"])
    assert other["robustness"]["compound"]["with"] == c["with"]
    val = evaluate(run, str(run.parent / "b"), tmp_path / "val", split="val")
    assert val["samples"] == 6


def test_accuracy_follows_the_labels(run, tmp_path):
    """Labels that are the model's own answers score 1; the same images labelled one class
    further score 0, and the confusion matrix says which class each image went to."""
    images = np.random.default_rng(1).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    pred = predict_proba(load_run(run).model, images, 4).argmax(1)
    names = np.array(["class0", "class1", "class2"])
    np.savez(tmp_path / "own.npz", images=images, labels=pred, class_names=names)
    right = evaluate(run, str(tmp_path / "own.npz"), tmp_path / "e1")
    assert right["accuracy"] == 1.0 and right["samples"] == 12
    wrong = (pred + 1) % 3
    np.savez(tmp_path / "off.npz", images=images, labels=wrong, class_names=names)
    m = evaluate(run, str(tmp_path / "off.npz"), tmp_path / "e2")
    assert m["accuracy"] == 0.0 and m["macro_f1"] == 0.0
    assert m["confusion_matrix"] == confusion_matrix(wrong, pred, 3).tolist()


def test_evaluate_npz_and_class_folder_inputs(run, tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 40, 40, 3), dtype=np.uint8)  # resized to 32 by intake
    labels = np.array([0, 1, 2, 0, 1, 2])
    np.savez(tmp_path / "ok.npz", images=images, labels=labels,
             class_names=np.array(["class0", "class1", "class2"]))
    assert evaluate(run, str(tmp_path / "ok.npz"), tmp_path / "e1")["samples"] == 6
    np.savez(tmp_path / "bad.npz", images=images, labels=labels,
             class_names=np.array(["x", "y", "z"]))
    with pytest.raises(InputError, match="class names"):
        evaluate(run, str(tmp_path / "bad.npz"), tmp_path / "e2")
    for name in ("class0", "class1", "other"):
        (tmp_path / "folders" / name).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "folders" / name / "a.png"), images[0])
    with pytest.raises(InputError, match="class names"):
        evaluate(run, str(tmp_path / "folders"), tmp_path / "e3")


def test_missing_or_corrupt_run_is_named(run, tmp_path):
    with pytest.raises(InputError, match="no such run directory"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="model.keras: missing"):
        load_run(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("model.keras", "run.json"):
        (broken / name).write_bytes((run / name).read_bytes())
    (broken / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="config.json: unreadable"):
        load_run(broken)
    (broken / "config.json").write_bytes((run / "config.json").read_bytes())
    (broken / "model.keras").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(InputError, match="model.keras: unreadable model"):
        load_run(broken)
