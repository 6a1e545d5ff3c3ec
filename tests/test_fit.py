"""fit end to end on a tiny build: files, phases, resume after an interruption, refusals."""

from __future__ import annotations

import csv
import json
import shutil
import sys

import h5py
import keras
import numpy as np
import pytest
from build_factory import make_build

from frozenaug import format as fmt
from frozenaug.common.errors import InputError
from frozenaug.trainer.buildcheck import class_weights
from frozenaug.trainer.cli import main as train_main
from frozenaug.trainer.config import (
    FitConfig,
    config_differences,
    load_run_config,
    read_config_file,
    resolve_config,
    resolve_recipe,
)
from frozenaug.trainer.train.fit import fit


class Interrupt(Exception):
    pass


class StopAfter(keras.callbacks.Callback):
    """Raise after an epoch's checkpoint is written: a kill between two epochs."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Interrupt(f"killed after epoch {epoch}")


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return make_build(tmp_path_factory.mktemp("b"), n_per_class=6, num_classes=3, size=32)


def _cfg(build, **kw) -> FitConfig:
    base = dict(build_dir=str(build), model="simple_cnn", weights="none", epochs_coarse=2,
                epochs_fine=1, batch_size=8, head_units=[16], patience=5, dropout=0.0)
    return FitConfig(**{**base, **kw})


def _history(run):
    with open(run / "history.csv") as f:
        return list(csv.DictReader(f))


def test_fit_writes_run_and_resume_matches_uninterrupted(build, tmp_path):
    cfg = _cfg(build)
    full = fit(cfg, tmp_path / "full", verbose=0, eager=True)
    run = tmp_path / "full"
    for name in ("model.keras", "history.csv", "curves.png", "config.json", "run.json",
                 "state.json"):
        assert (run / name).is_file(), name
    # what trained: fine_build "auto" resolved (this build has no finishing build)
    assert json.loads((run / "config.json").read_text()) == resolve_recipe(cfg).to_dict()
    assert resolve_recipe(cfg).fine_build == "" and cfg.fine_build == "auto"
    rows = _history(run)
    assert [r["phase"] for r in rows] == ["coarse", "coarse", "fine"]
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    # warm-up then cosine decay to lr/100 in the first phase; the fine phase decays from fine_lr
    assert float(rows[1]["learning_rate"]) == pytest.approx(cfg.lr / 100, rel=1e-3)
    # fine_lr auto from scratch: the finishing phase's 2e-4, recorded in run.json
    assert cfg.fine_lr == "auto" and cfg.fine_lr_value == 2e-4
    assert float(rows[2]["learning_rate"]) == pytest.approx(2e-4 / 100, rel=1e-3)
    assert json.loads((run / "run.json").read_text())["fine_lr"] == 2e-4
    # val_ce: the plain cross-entropy EarlyStopping watches, comparable across phases
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "val_ce"} <= set(rows[0])
    assert json.loads((run / "state.json").read_text())["phase"] == "done"
    # tensorboard is installed (the cpu/gpu extras): both phases log to RUN/tb
    assert list((run / "tb" / "train").glob("events.out.tfevents.*"))
    assert list((run / "tb" / "validation").glob("events.out.tfevents.*"))
    model = keras.saving.load_model(run / "model.keras", compile=False)
    assert model.output_shape == (None, 3)

    # Interrupted after the second coarse epoch (before the phase change), then resumed.
    cut = tmp_path / "cut"
    with pytest.raises(Interrupt):
        fit(cfg, cut, verbose=0, eager=True, extra_callbacks=[StopAfter(1)])
    state = json.loads((cut / "state.json").read_text())
    assert (state["phase"], state["epoch"]) == ("coarse", 1)
    assert (cut / state["checkpoint"]).is_file()
    with pytest.raises(InputError, match="--resume"):
        fit(cfg, cut, verbose=0, eager=True)
    resumed = fit(cfg, cut, resume=True, verbose=0, eager=True)
    assert resumed["epochs"] == full["epochs"] == 3
    # The resumed run trains what the uninterrupted one trained: same losses, same weights.
    cut_rows = _history(cut)
    assert [(r["epoch"], r["phase"]) for r in cut_rows] == [(r["epoch"], r["phase"]) for r in rows]
    for a, b in zip(rows, cut_rows, strict=True):
        for key in ("loss", "val_loss", "val_ce", "learning_rate"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-4, abs=1e-6), key
    resumed_model = keras.saving.load_model(cut / "model.keras", compile=False)
    for wa, wb in zip(model.get_weights(), resumed_model.get_weights(), strict=True):
        np.testing.assert_allclose(wb, wa, rtol=1e-4, atol=1e-5)


def test_resume_inside_fine_phase_restores_optimizer(build, tmp_path):
    cfg = _cfg(build, epochs_coarse=1, epochs_fine=2)
    run = tmp_path / "run"
    with pytest.raises(Interrupt):
        fit(cfg, run, verbose=0, eager=True, extra_callbacks=[StopAfter(1)])
    state = json.loads((run / "state.json").read_text())
    assert (state["phase"], state["epoch"], state["fine_start"]) == ("fine", 1, 1)
    ck = keras.saving.load_model(run / state["checkpoint"])
    assert int(ck.optimizer.iterations.numpy()) == 3  # 18 samples / 8 = 3 steps, fine phase
    # What a kill during atomic writes of state.json and a checkpoint leaves behind.
    stale = [run / ".tmp-state.json.k3j2x", run / "checkpoints" / ".tmp-4242-epoch-002.keras"]
    for p in stale:
        p.write_bytes(b"half")
    fit(cfg, run, resume=True, verbose=0, eager=True)
    assert [r["phase"] for r in _history(run)] == ["coarse", "fine", "fine"]
    assert not [p for p in stale if p.exists()]


def test_existing_run_of_other_config_is_refused(build, tmp_path):
    run = tmp_path / "run"
    fit(_cfg(build, epochs_coarse=1, epochs_fine=0), run, verbose=0, eager=True)
    with pytest.raises(InputError, match="differs in epochs_fine"):
        fit(_cfg(build, epochs_coarse=1, epochs_fine=1), run, resume=True, verbose=0)
    out = fit(_cfg(build, epochs_coarse=1, epochs_fine=1), run, overwrite=True, verbose=0,
              eager=True)
    assert out["epochs"] == 2
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        fit(_cfg(build), tmp_path / "other", verbose=0)


def test_fit_without_tensorboard_notes_it_and_trains(build, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # "import tensorboard" now fails
    run = tmp_path / "run"
    out = fit(_cfg(build, epochs_coarse=1, epochs_fine=0), run, verbose=0, eager=True)
    assert out["epochs"] == 1 and (run / "model.keras").is_file()
    assert "tensorboard is not installed" in capsys.readouterr().err
    assert not (run / "tb").exists()


def test_class_weights_balance_the_counts():
    w = class_weights([10, 30, 0])
    assert w[0] == pytest.approx(40 / 30) and w[1] == pytest.approx(40 / 90) and w[2] == 1.0


def test_class_weights_come_from_the_split_not_the_mixed_shards(tmp_path):
    # A MixUp/CutMix build: its shards' class counts are argmaxes of soft labels, which drift
    # towards the partners' classes; the weights must come from the real images of the split.
    from conftest import make_images

    from frozenaug.builder.cli import main as build_main

    labels = np.array([0] * 40 + [1] * 20 + [2] * 10)
    npz = tmp_path / "d.npz"
    np.savez(npz, images=make_images(len(labels), 24, 24, seed=3), labels=labels)
    out = tmp_path / "b"
    assert build_main(["build", str(npz), "--out", str(out), "--epochs", "1", "--policy",
                       "heavy-mix", "--no-clean", "--seed", "1"]) == 0
    m = fmt.load_manifest(out)
    counts = m.split_counts("train")
    assert sum(counts) == sum(m.class_counts("train"))
    assert counts == m.raw["split"]["class_counts"]["train"]
    assert counts[0] > counts[1] > counts[2] > 0  # the 4:2:1 of the input, split stratified
    w = class_weights(counts)
    assert w[2] > w[1] > w[0]


def test_config_layers_and_rejections(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("epochs-fine: 4\nlr: 0.01\nhead_units: [8, 4]\n")
    cfg = resolve_config({"lr": 0.5, "model": None}, str(f))
    assert (cfg.epochs_fine, cfg.lr, cfg.head_units, cfg.model) == (4, 0.5, [8, 4],
                                                                   "small_resnet")
    (tmp_path / "bad.json").write_text('{"epochs_fien": 3}')
    with pytest.raises(InputError, match="unknown key.*epochs_fien"):
        resolve_config({}, str(tmp_path / "bad.json"))
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(InputError, match="broken.json"):
        read_config_file(tmp_path / "broken.json")
    # verify only checks the input: stored, but a resume may switch it
    assert resolve_config({"verify": True}).verify is True
    assert config_differences(FitConfig(verify=True), FitConfig()) == []
    assert config_differences(FitConfig(seed=1), FitConfig()) == ["seed"]
    for flags, key in (({"batch_size": 0}, "batch_size"), ({"lr": -1.0}, "lr"),
                       ({"epochs_coarse": -1}, "epochs_coarse"), ({"dropout": 1.5}, "dropout"),
                       ({"xla": "maybe"}, "xla"), ({"label_smoothing": 1.0}, "label_smoothing"),
                       ({"optimizer": "sgd"}, "optimizer"), ({"mix": "later"}, "mix"),
                       ({"warmup_epochs": float("nan")}, "warmup_epochs")):
        with pytest.raises(InputError, match=key):
            resolve_config(flags)


def test_fine_lr_auto_resolves_for_scratch_and_pretrained(tmp_path):
    assert FitConfig().fine_lr == "auto" and FitConfig().fine_lr_value == 2e-4
    for weights in ("imagenet", "backbone.weights.h5", "run/model.keras"):
        assert FitConfig(weights=weights, model="convnext_tiny").fine_lr_value == 1e-5
    assert FitConfig(fine_lr=3e-4, weights="imagenet", model="convnext_tiny").fine_lr_value == 3e-4
    # a flag arrives as text, a file as a number or "auto"; both as given
    assert resolve_config({"fine_lr": "auto"}).fine_lr == "auto"
    assert resolve_config({"fine_lr": "5e-5"}).fine_lr == 5e-5
    f = tmp_path / "c.yaml"
    f.write_text("fine-lr: 1.0e-4\n")
    assert resolve_config({}, str(f)).fine_lr_value == 1e-4
    f.write_text("fine_lr: auto\nweights: imagenet\nmodel: convnext_tiny\n")
    assert resolve_config({}, str(f)).fine_lr_value == 1e-5
    for bad in ("0", "-1e-4", "nan", "inf", "fast", True, 0.0):
        with pytest.raises(InputError, match="fine.lr: must be auto or a positive number"):
            resolve_config({"fine_lr": bad})
    # a run stored before auto existed kept its number: resuming it trains at that number
    run = tmp_path / "old"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({**FitConfig().to_dict(), "fine_lr": 1e-5}))
    assert load_run_config(run).fine_lr_value == 1e-5


def test_fine_lr_auto_fine_tunes_pretrained_weights_at_1e_5(build, tmp_path):
    fit(_cfg(build, epochs_fine=0, epochs_coarse=1), tmp_path / "scratch", verbose=0, eager=True)
    cfg = _cfg(build, weights=str(tmp_path / "scratch" / "model.keras"), epochs_coarse=1,
               epochs_fine=1)
    fit(cfg, tmp_path / "tuned", verbose=0, eager=True)
    rows = _history(tmp_path / "tuned")
    assert [r["phase"] for r in rows] == ["coarse", "fine"]
    assert float(rows[1]["learning_rate"]) == pytest.approx(1e-5 / 100, rel=1e-3)
    assert json.loads((tmp_path / "tuned" / "run.json").read_text())["fine_lr"] == 1e-5
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["fine_lr"] == "auto"


def _tree(root):
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def _fit_argv(build, run, *extra):
    return ["fit", str(build), "--out", str(run), "--model", "simple_cnn", "--weights", "none",
            "--epochs-coarse", "1", "--epochs-fine", "0", "--batch-size", "8",
            "--mixed-precision", "off", "--xla", "off", *extra]


def _one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("frozenaug-train: error: "), lines
    return lines[0]


def test_failed_start_writes_nothing(build, tmp_path, capsys):
    missing = tmp_path / "none.weights.h5"
    run = tmp_path / "run"
    assert train_main(_fit_argv(build, run, "--weights", str(missing))) == 2
    assert str(missing) in _one_error_line(capsys)
    assert not run.exists()
    # An existing run stays untouched, even with --overwrite (it is removed only once the
    # new start has passed every check).
    fit(_cfg(build, epochs_coarse=1, epochs_fine=0), run, verbose=0, eager=True)
    before = _tree(run)
    assert train_main(_fit_argv(build, run, "--weights", str(missing), "--overwrite")) == 2
    assert str(missing) in _one_error_line(capsys)
    assert _tree(run) == before


def _flip_image_byte(shard) -> None:
    with h5py.File(shard, "r") as f:
        offset = f[fmt.DS_IMAGES].id.get_chunk_info(0).byte_offset + 100
    with open(shard, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def test_fit_verify_catches_a_changed_image_byte(build, tmp_path, capsys):
    damaged = tmp_path / "build"
    shutil.copytree(build, damaged)
    manifest = fmt.load_manifest(damaged)
    shard = manifest.path_of(manifest.shards_of("train", 1)[0])
    _flip_image_byte(shard)
    run = tmp_path / "run"
    assert train_main(_fit_argv(damaged, run, "--verify")) == 2
    line = _one_error_line(capsys)
    assert str(shard) in line and "sha256" in line
    assert not run.exists()
    # Without --verify the changed pixel is read as it is and the run trains.
    assert train_main(_fit_argv(damaged, run)) == 0
    assert (run / "model.keras").is_file()
    assert json.loads((run / "config.json").read_text())["verify"] is False


def _same_split(*builds):
    """The split.json a real build holds, the same in each (the factory writes none)."""
    for b in builds:
        (b / "split.json").write_text(json.dumps(
            {"input_fingerprint": "f" * 64, "splits": {"train": {"indices": [0, 1]}}}))
    return builds


def test_fine_build_feeds_the_fine_phase_and_its_batchnorm(tmp_path, monkeypatch):
    """heavy-then-light: the fine phase and precise BN read the fine build's train split; the
    val split stays the run's own."""
    from frozenaug.trainer.read.stream import ShardStream

    main, fine = _same_split(
        make_build(tmp_path / "main", n_per_class=6, num_classes=3, size=32),
        make_build(tmp_path / "fine", n_per_class=6, num_classes=3, size=32, epochs=1, seed=1))
    read = []

    def spy(name):
        orig = getattr(ShardStream, name)

        def wrapped(self, *a, **k):
            read.append((name, self.split, self.manifest.root.name))
            return orig(self, *a, **k)
        monkeypatch.setattr(ShardStream, name, wrapped)
    spy("dataset")
    spy("iter_numpy")
    run = tmp_path / "run"
    fit(_cfg(main, epochs_coarse=1, epochs_fine=1, fine_build=str(fine)), run, verbose=0,
        eager=True)
    assert [r["phase"] for r in _history(run)] == ["coarse", "fine"]
    train = [r for r in read if r[1] == "train"]
    assert train == [("dataset", "train", "main"), ("dataset", "train", "fine"),
                     ("iter_numpy", "train", "fine")]
    assert {r[2] for r in read if r[1] == "val"} == {"main"}
    assert json.loads((run / "run.json").read_text())["fine_build"] == str(fine.resolve())

    # another split: refused before anything is written
    (fine / "split.json").write_text(json.dumps(
        {"input_fingerprint": "e" * 64, "splits": {"train": {"indices": [0, 1]}}}))
    with pytest.raises(InputError, match="split"):
        fit(_cfg(main, epochs_coarse=1, epochs_fine=1, fine_build=str(fine)),
            tmp_path / "other", verbose=0, eager=True)
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("model,normed", [("small_resnet", True), ("simple_cnn", False)])
def test_input_norm_auto_standardises_the_residual_nets_only(build, tmp_path, model, normed):
    """The default (auto) gives small_resnet the per-image standardisation that measured better
    on the blood cells; simple_cnn keeps the raw colours; an explicit value wins."""
    run = tmp_path / "run"
    cfg = _cfg(build, model=model, epochs_coarse=1, epochs_fine=0)
    assert cfg.input_norm == "auto"
    fit(cfg, run, verbose=0, eager=True)
    saved = keras.saving.load_model(run / "model.keras", compile=False)
    assert any(layer.name == "standardize" for layer in saved.layers) == normed
    flipped = "none" if normed else "image"
    assert _cfg(build, model=model, input_norm=flipped).model_input_norm == flipped
