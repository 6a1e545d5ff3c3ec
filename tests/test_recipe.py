"""The recipe in one command each: ``build`` writes the heavy epochs and, inside, a light
finishing build of the same split; ``fit BUILD`` trains heavy then finishes on it; and
``evaluate``/``predict`` take several runs as one ensemble."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from frozenaug import format as fmt
from frozenaug.builder.cli import main as build_main
from frozenaug.common.errors import InputError
from frozenaug.trainer.config import FitConfig, resolve_recipe

# 60 images of 32x32 in 3 classes, 2 heavy epochs; the finishing build is light K=3.
BASE = ["--size", "32", "--epochs", "2", "--shard-size", "16", "--seed", "3", "--jobs", "1"]
FIT = ["--model", "simple_cnn", "--epochs-coarse", "1", "--batch-size", "16"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8)
    # learnable: each class its own tint
    images[..., 0] = np.clip(images[..., 0] // 4 + (np.arange(60) % 3)[:, None, None] * 80, 0,
                             255)
    path = tmp_path_factory.mktemp("d") / "tiny.npz"
    np.savez(path, images=images, labels=(np.arange(60) % 3).astype(np.uint8))
    return path


@pytest.fixture(scope="module")
def recipe_build(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("b") / "B"
    assert build_main(["build", str(data), "--out", str(out), *BASE]) == 0
    return out


def _shards(root: Path) -> dict[str, bytes]:
    m = fmt.load_manifest(root)
    return {s.path: m.path_of(s).read_bytes() for s in m.shards}


def test_heavy_build_writes_its_finishing_build(recipe_build, data, tmp_path):
    m = fmt.load_manifest(recipe_build)
    assert m.raw["config"]["finish"] == "light:3" and m.raw["policy"]["name"] == "heavy"
    assert m.finish["policy"] == "light" and m.finish["epochs"] == 3
    fin = fmt.load_manifest(m.finish_dir)
    assert fin.epochs == 3 and fin.raw["policy"]["name"] == "light"
    assert fin.finish is None and "finish" not in fin.raw["config"]
    assert fmt.sha256_file(m.finish_dir / fmt.MANIFEST_NAME) == m.finish["manifest_sha256"]
    # the same split, byte for byte: what fit's --fine-build check compares
    assert (m.finish_dir / "split.json").read_bytes() == (recipe_build / "split.json").read_bytes()
    # exactly the build a user gets from a second command
    alone = tmp_path / "light"
    assert build_main(["build", str(data), "--out", str(alone), *BASE[:2], "--epochs", "3",
                       *BASE[4:], "--policy", "light"]) == 0
    assert (alone / fmt.MANIFEST_NAME).read_bytes() == (
        m.finish_dir / fmt.MANIFEST_NAME).read_bytes()
    assert _shards(alone) == _shards(m.finish_dir)


@pytest.mark.parametrize("extra", [["--finish", "none"], ["--policy", "light"]])
def test_no_finishing_build_unless_heavy_or_asked(data, tmp_path, extra):
    out = tmp_path / "B"
    assert build_main(["build", str(data), "--out", str(out), *BASE, *extra]) == 0
    m = fmt.load_manifest(out)
    assert m.finish is None and "finish" not in m.raw["config"]
    assert not (out / fmt.FINISH_DIR).exists()


def test_bad_finish_is_one_line_and_writes_nothing(data, tmp_path, capsys):
    for bad, said in (("light", "POLICY:K"), ("light:0", "K in 1..10000"),
                      ("nosuch:2", "nosuch")):
        out = tmp_path / bad.replace(":", "_")
        assert build_main(["build", str(data), "--out", str(out), *BASE,
                           "--finish", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--finish" in err and said in err, err
        assert not out.exists()


def test_damaged_finishing_build_is_rebuilt_and_verified(data, tmp_path, capsys):
    out = tmp_path / "B"
    assert build_main(["build", str(data), "--out", str(out), *BASE]) == 0
    before = _shards(out / fmt.FINISH_DIR)
    victim = sorted(before)[0]
    (out / fmt.FINISH_DIR / victim).unlink()
    assert build_main(["verify", str(out)]) == 2
    assert victim in capsys.readouterr().err
    # the same command again: not "up to date" while its finishing build lacks a shard
    assert build_main(["build", str(data), "--out", str(out), *BASE]) == 0
    said = capsys.readouterr().out
    assert "kept" in said and "finishing build" in said
    assert _shards(out / fmt.FINISH_DIR) == before
    assert build_main(["verify", str(out)]) == 0
    assert capsys.readouterr().out.count("OK") == 2
    # --overwrite with another finishing build replaces it
    assert build_main(["build", str(data), "--out", str(out), *BASE, "--overwrite",
                       "--finish", "none"]) == 0
    assert not (out / fmt.FINISH_DIR).exists()


def test_fit_build_runs_the_whole_recipe(recipe_build, tmp_path):
    from frozenaug.trainer.cli import main as train_main

    run = tmp_path / "run"
    assert train_main(["fit", str(recipe_build), "--out", str(run), *FIT]) == 0
    with open(run / "history.csv") as f:
        phases = [r["phase"] for r in csv.DictReader(f)]
    assert phases == ["coarse", "fine", "fine", "fine"]  # 3 finishing epochs by default
    info = json.loads((run / "run.json").read_text())
    assert info["fine_build"] == str((recipe_build / fmt.FINISH_DIR).resolve())
    assert info["fine_lr"] == 2e-4
    stored = json.loads((run / "config.json").read_text())  # what trained, for a resume
    assert stored["epochs_fine"] == 3 and Path(stored["fine_build"]).name == fmt.FINISH_DIR


def test_recipe_auto_values(recipe_build, tmp_path):
    def resolved(**kw):
        c = resolve_recipe(FitConfig(build_dir=str(recipe_build), **kw))
        return c.epochs_coarse, c.fine_build, c.epochs_fine

    finish = str(recipe_build / fmt.FINISH_DIR)
    assert resolved() == (120, finish, 3)
    assert resolved(epochs_fine=0) == (120, "", 0)  # no finishing phase asked for
    assert resolved(epochs_fine=5, epochs_coarse=7) == (7, finish, 5)
    assert resolved(fine_build="none") == (120, "", 0)
    # pretrained: the transfer recipe's 10 epochs of the head, fine-tuned on the build itself
    assert resolved(weights="w.weights.h5", model="efficientnetv2b0") == (10, "", 0)
    assert resolved(weights="w.weights.h5", model="efficientnetv2b0",
                    epochs_fine=20) == (10, "", 20)
    assert resolved(weights="w.weights.h5", model="efficientnetv2b0", epochs_coarse=0,
                    epochs_fine=20) == (0, "", 20)
    plain = tmp_path / "plain"
    shutil.copytree(recipe_build, plain, ignore=shutil.ignore_patterns(fmt.FINISH_DIR))
    raw = json.loads((plain / fmt.MANIFEST_NAME).read_text())
    del raw["finish"]
    (plain / fmt.MANIFEST_NAME).write_text(json.dumps(raw))
    assert resolve_recipe(FitConfig(build_dir=str(plain))).epochs_fine == 0
    with pytest.raises(InputError, match="epochs-fine"):
        resolve_recipe(FitConfig(build_dir=str(plain), fine_build=str(recipe_build),
                                 epochs_fine=0))


def test_patience_auto_resolves_by_schedule_and_bad_ones_fail(recipe_build, tmp_path, capsys):
    from frozenaug.trainer.cli import main as train_main

    assert FitConfig().patience_epochs is None  # cosine: its decay runs to the end it was given
    assert FitConfig(schedule="plateau").patience_epochs == 8
    assert FitConfig(patience="none", schedule="plateau").patience_epochs is None
    assert FitConfig(patience=0).patience_epochs == 1  # Keras counts 0 and 1 alike
    assert FitConfig(patience=5).patience_epochs == 5
    for bad in ("soon", "-1", "1.5"):
        assert train_main(["fit", str(recipe_build), "--out", str(tmp_path / "r"), *FIT,
                           "--patience", bad]) != 0
        err = capsys.readouterr().err.strip()
        assert "--patience" in err and "auto, none or an integer" in err and "\n" not in err
    assert not (tmp_path / "r").exists()
    cfg = tmp_path / "c.yaml"
    cfg.write_text("patience: none\n")
    run = tmp_path / "run"
    assert train_main(["fit", str(recipe_build), "--out", str(run), *FIT, "--config", str(cfg),
                       "--epochs-fine", "0"]) == 0
    assert json.loads((run / "config.json").read_text())["patience"] == "none"


# --- ensembles --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_runs(recipe_build, tmp_path_factory):
    from frozenaug.trainer.cli import main as train_main

    root = tmp_path_factory.mktemp("runs")
    runs = [root / f"r{s}" for s in (0, 1)]
    for s, r in enumerate(runs):
        assert train_main(["fit", str(recipe_build), "--out", str(r), *FIT, "--epochs-fine",
                           "0", "--seed", str(s)]) == 0
    return runs


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "frozenaug.trainer", *argv],
                          capture_output=True, text=True)


def _proba(csv_path: Path) -> np.ndarray:
    with open(csv_path) as f:
        rows = list(csv.reader(f))[1:]
    return np.array([[float(v) for v in r[2:]] for r in rows])


def test_ensemble_averages_its_members(two_runs, recipe_build, tmp_path):
    """The console scripts as a user runs them: the ensemble's probabilities are the mean of
    its members', its accuracy that of their mean."""
    r0, r1 = map(str, two_runs)
    for name, runs in (("p0", [r0]), ("p1", [r1]), ("both", [r0, r1])):
        done = _cli("predict", *runs, str(recipe_build), "--out", str(tmp_path / f"{name}.csv"))
        assert done.returncode == 0, done.stderr
    mean = (_proba(tmp_path / "p0.csv") + _proba(tmp_path / "p1.csv")) / 2
    np.testing.assert_allclose(_proba(tmp_path / "both.csv"), mean, atol=2e-6)

    done = _cli("evaluate", r0, r1, "--out", str(tmp_path / "e"))  # default: the runs' build
    assert done.returncode == 0, done.stderr
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert m["runs"] == [r0, r1] and m["cost"]["models"] == 2
    assert m["accuracy"] == pytest.approx(
        np.mean(mean.argmax(1) == _test_labels(recipe_build)), abs=1e-9)


def _test_labels(build: Path) -> np.ndarray:
    from frozenaug.trainer.read.stream import ShardStream

    s = ShardStream(fmt.load_manifest(build), "test", batch_size=64, shuffle=False)
    return s.labels()


def test_ensemble_refuses_a_member_of_another_split(two_runs, data, tmp_path):
    other = tmp_path / "B2"
    assert build_main(["build", str(data), "--out", str(other), *BASE[:6], "--seed", "4",
                       "--jobs", "1", "--finish", "none"]) == 0
    from frozenaug.trainer.cli import main as train_main

    stranger = tmp_path / "r2"
    assert train_main(["fit", str(other), "--out", str(stranger), *FIT]) == 0
    done = _cli("evaluate", str(two_runs[0]), str(stranger), "--out", str(tmp_path / "e"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "split" in done.stderr and str(stranger) in done.stderr
    assert not (tmp_path / "e").exists()
    done = _cli("predict", str(two_runs[0]), "--out", str(tmp_path / "p.csv"))
    assert done.returncode == 2 and "RUN [RUN ...] INPUT" in done.stderr


def test_finishing_build_lacks_a_dropped_family_too(data, tmp_path):
    """Leave-one-family-out stays honest through the finishing phase: its light build lacks
    the family as well."""
    out = tmp_path / "B"
    assert build_main(["build", str(data), "--out", str(out), *BASE, "--drop-family",
                       "geometric"]) == 0
    fin = fmt.load_manifest(out / fmt.FINISH_DIR)
    assert fin.raw["config"]["drop_family"] == "geometric"
    assert fin.raw["policy"]["name"] == "light-no-geometric"


def test_compound_only_scores_the_suite_alone(two_runs, tmp_path):
    done = _cli("evaluate", str(two_runs[0]), "--out", str(tmp_path / "e"), "--distort",
                "--compound-only")
    assert done.returncode == 0, done.stderr
    rob = json.loads((tmp_path / "e" / "metrics.json").read_text())["robustness"]
    assert rob["results"] == {} and 0 <= rob["compound"]["accuracy"] <= 1
    assert "compound" in done.stdout and "sev 1" not in done.stdout


def test_ensemble_refuses_runs_of_other_classes(two_runs, tmp_path):
    odd = tmp_path / "odd"
    shutil.copytree(two_runs[1], odd)
    info = json.loads((odd / "run.json").read_text())
    info["class_names"] = [*info["class_names"][1:], info["class_names"][0]]
    (odd / "run.json").write_text(json.dumps(info))
    done = _cli("evaluate", str(two_runs[0]), str(odd), "--out", str(tmp_path / "e"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "share classes" in done.stderr and "odd" in done.stderr
    assert not (tmp_path / "e").exists()
