"""frozenaug-train: exit codes, one-line errors, fit/evaluate/predict through main()."""

from __future__ import annotations

import json

import pytest
from build_factory import make_build

from frozenaug.trainer.cli import main

FIT = ["--model", "simple_cnn", "--weights", "none", "--epochs-coarse", "1",
       "--epochs-fine", "0", "--batch-size", "8"]


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("frozenaug-train: error: ") and "\n" not in err, err
    return err


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return make_build(tmp_path_factory.mktemp("cli"), n_per_class=4, num_classes=3, size=32)


def test_fit_evaluate_predict_and_rerun(build, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["fit", str(build), "--out", str(run), *FIT]) == 0
    assert json.loads((run / "config.json").read_text())["model"] == "simple_cnn"
    assert "1 epochs" in capsys.readouterr().out
    assert main(["fit", str(build), "--out", str(run), *FIT]) == 2
    assert "--resume" in _error(capsys)
    # --resume takes the stored config; the flags may be left out.
    assert main(["fit", str(build), "--out", str(run), "--resume"]) == 0
    assert "already finished" in capsys.readouterr().err
    assert main(["fit", str(build), "--out", str(run), "--resume", "--lr", "0.5"]) == 2
    assert "differs in lr" in _error(capsys)

    assert main(["evaluate", str(run), "--out", str(tmp_path / "ev")]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert (tmp_path / "ev" / "metrics.json").is_file()
    assert main(["predict", str(run), str(build), "--out", str(tmp_path / "p.csv"),
                 "--split", "val"]) == 0
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 1 + 6


@pytest.mark.parametrize("args, expected", [
    (["--model", "vgg16"], "allowed: small_resnet, small_resnet_wide, simple_cnn"),
    (["--batch-size", "0"], "batch_size"),
    (["--epochs-coarse", "-1"], "epochs_coarse"),
    (["--fine-lr", "0"], "fine_lr"),
])
def test_fit_rejects_bad_flags(build, tmp_path, capsys, args, expected):
    assert main(["fit", str(build), "--out", str(tmp_path / "r"), "--weights", "none",
                 *args]) == 2
    assert expected in _error(capsys)
    assert not (tmp_path / "r").exists()


def test_fit_config_file_unknown_key_and_missing_build(build, tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("modle: simple_cnn\n")
    assert main(["fit", str(build), "--out", str(tmp_path / "r"),
                 "--config", str(tmp_path / "c.yaml")]) == 2
    assert "modle" in _error(capsys)
    assert main(["fit", str(tmp_path / "nobuild"), "--out", str(tmp_path / "r"), *FIT]) == 2
    assert "nobuild" in _error(capsys)


def test_evaluate_and_predict_name_missing_run_files(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "no such run directory" in _error(capsys)
    assert main(["predict", str(tmp_path), "x.npz", "--out", str(tmp_path / "p.csv")]) == 2
    assert "model.keras: missing" in _error(capsys)
    with pytest.raises(SystemExit) as e:
        main(["evaluate"])
    assert e.value.code == 2
