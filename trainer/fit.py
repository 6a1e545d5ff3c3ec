"""``frozenaug-train fit``: a coarse phase (backbone frozen), then fine-tuning, resumable.

Phases. Coarse: the backbone is frozen and the head trains with L2 (``head_l2``) at ``lr``.
Fine: the model is rebuilt with L1L2 (``fine_l1``, ``fine_l2``) on the head, the coarse weights
are copied in, the top ``unfreeze`` backbone layers train (BatchNorm layers stay frozen, and the
backbone always runs in inference mode) at ``fine_lr``. For ``simple_cnn`` both phases train the
whole small net; the fine phase only lowers the LR and switches the head's regulariser. Keras
epochs are numbered across both phases (the fine phase starts where the coarse one stopped), so
the stream reads frozen epoch ``e mod K`` and ``history.csv`` is one table with a ``phase``
column. Each phase has its own EarlyStopping (best weights restored) and ReduceLROnPlateau on
val loss.

Resuming. After every epoch ``RunCheckpoint`` writes, in this order and each atomically: the
model with its optimizer (``checkpoints/epoch-NNN.keras``), the best weights when they improved
(``checkpoints/best.weights.h5``), then ``state.json`` (phase, last completed epoch, the
EarlyStopping and ReduceLROnPlateau counters, the history rows) and ``history.csv``. A kill at
any point leaves a state.json that names a complete checkpoint, and ``--resume`` continues
after that epoch with the same counters, so the history has the length of an uninterrupted run.
(Keras' ModelCheckpoint and CSVLogger write in place and separately, which a kill can leave
inconsistent, so this callback does both jobs.)

Distribution. ``--strategy mirrored`` builds and compiles under ``tf.distribute.
MirroredStrategy``; ``--batch-size`` is per replica, the stream's global batch is
``batch_size x replicas``. The learning rates are used as given, not scaled: with R replicas the
linear-scaling rule suggests passing ``--lr`` and ``--fine-lr`` multiplied by R (with a warm-up
for large R) if the single-device run was tuned at the per-replica batch size.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from builder.atomic import TMP_PREFIX, atomic_path, write_bytes, write_json
from builder.errors import InputError
from builder.format import load_manifest
from trainer import config as cfgmod
from trainer import models
from trainer.config import MODEL_NAME, RUN_INFO_NAME, STATE_NAME

# What fit writes into a run directory; --overwrite removes only these.
RUN_FILES = (cfgmod.CONFIG_NAME, STATE_NAME, RUN_INFO_NAME, MODEL_NAME, "history.csv",
             "curves.png", "checkpoints", "tb")


# --- run state and the per-epoch checkpoint -------------------------------------------------


def new_state() -> dict[str, Any]:
    return {"phase": "coarse", "epoch": -1, "fine_start": None, "checkpoint": None,
            "early_stopping": None, "reduce_lr": None, "stopped": False, "history": []}


def load_state(path: Path) -> dict[str, Any]:
    """``state.json`` of an interrupted run, or a fresh state when there is none."""
    if not path.is_file():
        return new_state()
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict) or state.get("phase") not in ("coarse", "fine", "done"):
            raise ValueError("not a run state")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(
            f"{path}: unreadable run state ({e}); start again with --overwrite"
        ) from None
    return {**new_state(), **state}


def save_atomic(path: Path, saver: Callable[[str], Any]) -> None:
    """``saver(tmp)`` then rename: the temporary keeps the suffix that Keras insists on."""
    tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}")
    try:
        saver(str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping whose counters (and best weights) survive an interruption."""

    def __init__(self, initial: dict[str, Any] | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.initial = initial
        self.initial_best_weights: list[np.ndarray] | None = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.initial:
            self.wait, self.best = self.initial["wait"], self.initial["best"]
            self.best_epoch = self.initial["best_epoch"]
            self.best_weights = self.initial_best_weights

    def snapshot(self) -> dict[str, Any]:
        return {"wait": self.wait, "best": _num(self.best), "best_epoch": self.best_epoch}


class ResumableReduceLR(keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau whose counters survive an interruption (the LR is in the optimizer)."""

    def __init__(self, initial: dict[str, Any] | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.initial = initial

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.initial:
            self.wait, self.best = self.initial["wait"], self.initial["best"]
            self.cooldown_counter = self.initial["cooldown_counter"]

    def snapshot(self) -> dict[str, Any]:
        return {"wait": self.wait, "best": _num(self.best),
                "cooldown_counter": self.cooldown_counter}


def _num(v: Any) -> float | None:
    return None if v is None or not math.isfinite(float(v)) else float(v)


class RunCheckpoint(keras.callbacks.Callback):
    """After each epoch: model+optimizer, best weights, then state.json and history.csv."""

    def __init__(self, run: Path, state: dict[str, Any], phase: str,
                 es: ResumableEarlyStopping, rlr: ResumableReduceLR) -> None:
        super().__init__()
        self.run, self.state, self.phase, self.es, self.rlr = run, state, phase, es, rlr

    def on_epoch_end(self, epoch, logs=None):
        ckdir = self.run / "checkpoints"
        name = f"checkpoints/epoch-{epoch:03d}.keras"
        save_atomic(self.run / name, self.model.save)
        if self.es.best_epoch == epoch:
            save_atomic(ckdir / "best.weights.h5", self.model.save_weights)
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        row = {"epoch": epoch, "phase": self.phase,
               **{k: float(v) for k, v in (logs or {}).items() if k != "learning_rate"},
               "learning_rate": lr}
        self.state.update(epoch=epoch, checkpoint=name, early_stopping=self.es.snapshot(),
                          reduce_lr=self.rlr.snapshot(), stopped=bool(self.model.stop_training))
        self.state["history"].append(row)
        write_json(self.run / STATE_NAME, self.state)
        write_history_csv(self.run / "history.csv", self.state["history"])
        for old in ckdir.glob("epoch-*.keras"):
            if old.name != Path(name).name:
                old.unlink(missing_ok=True)


def write_history_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_bytes(path, buf.getvalue().encode())


def write_curves(path: Path, rows: list[dict[str, Any]], fine_start: int | None) -> None:
    """Loss and accuracy over both phases; a dashed line where fine-tuning starts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [r["epoch"] + 1 for r in rows]
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for key, style in ((metric, "-"), (f"val_{metric}", "--")):
            ys = [r.get(key, float("nan")) for r in rows]
            if rows and key in rows[0]:
                ax.plot(epochs, ys, style, marker="o", ms=3, label=key)
        if fine_start is not None and rows and fine_start < len(rows):
            ax.axvline(fine_start + 0.5, color="grey", ls=":", label="fine-tuning starts")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


# --- fit --------------------------------------------------------------------------------------


def _gpu_present() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def _tristate(value: str, gpu: bool) -> bool:
    return gpu if value == "auto" else value == "on"


def prepare_run_dir(run: Path, cfg: cfgmod.FitConfig, *, resume: bool, overwrite: bool) -> None:
    """Refuse to mix runs: an existing run continues only with --resume and the same config."""
    if overwrite:
        for name in RUN_FILES:
            p = run / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    if run.exists() and not run.is_dir():
        raise InputError(f"{run}: exists and is not a folder")
    cfg_path = run / cfgmod.CONFIG_NAME
    if cfg_path.is_file():
        stored = cfgmod.load_run_config(run)
        diff = cfgmod.config_differences(stored, cfg)
        if diff:
            raise InputError(
                f"{run}: holds a run of another config (differs in {', '.join(diff)}); "
                "repeat the run's own settings, or pass --overwrite to replace it"
            )
        if not resume:
            raise InputError(
                f"{run}: holds a run of this config already; pass --resume to continue it "
                "or --overwrite to start again"
            )
    elif run.is_dir() and any(run.iterdir()):
        raise InputError(
            f"{run}: not empty and not a frozenaug-train run (no {cfgmod.CONFIG_NAME}); "
            "choose a new folder or pass --overwrite"
        )
    run.mkdir(parents=True, exist_ok=True)
    if not cfg_path.is_file():
        write_json(cfg_path, cfg.to_dict())


def class_weights(counts: list[int]) -> dict[int, float]:
    """Balanced weights n / (C * n_c); a class absent from train gets 1 (it never occurs)."""
    n, c = sum(counts), len(counts)
    return {i: (n / (c * k) if k else 1.0) for i, k in enumerate(counts)}


def _build(cfg: cfgmod.FitConfig, phase: str, shape, num_classes: int, weights: str):
    reg = (models.head_regularizer(0.0, cfg.head_l2) if phase == "coarse"
           else models.head_regularizer(cfg.fine_l1, cfg.fine_l2))
    return models.build_model(
        cfg.model, shape, num_classes, weights=weights, head_units=cfg.head_units,
        dropout=cfg.dropout, head_regularizer=reg, output_l2=cfg.output_l2, seed=cfg.seed,
    )


def _compile(model: keras.Model, optimizer: keras.optimizers.Optimizer, jit: bool,
             eager: bool = False) -> None:
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"],
                  jit_compile=jit and not eager, run_eagerly=eager)


def fit(
    cfg: cfgmod.FitConfig,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    verbose: int | None = None,
    extra_callbacks: list[keras.callbacks.Callback] | tuple = (),
    eager: bool = False,
) -> dict[str, Any]:
    """Train (or continue) the run in ``out``; return a summary (epochs, final val metrics).

    ``extra_callbacks`` run after the checkpoint of each epoch; ``eager`` skips tf.function
    tracing, which is faster for the few steps of a test and much slower for real data.
    """
    cfg.validate()
    models.check_model_name(cfg.model)
    manifest = load_manifest(cfg.build_dir)
    run = Path(out)
    prepare_run_dir(run, cfg, resume=resume, overwrite=overwrite)
    state = load_state(run / STATE_NAME)
    if state["phase"] == "done":
        print(f"{run}: training already finished; nothing to resume", file=sys.stderr)
        return {"epochs": len(state["history"]), "history": state["history"], "resumed": True}

    from trainer.stream import ShardStream  # the reader; imported late so --help stays fast

    gpu = _gpu_present()
    mixed, jit = _tristate(cfg.mixed_precision, gpu), _tristate(cfg.xla, gpu)
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    keras.utils.set_random_seed(cfg.seed + len(state["history"]))
    strategy = (tf.distribute.MirroredStrategy() if cfg.strategy == "mirrored"
                else tf.distribute.get_strategy())
    replicas = strategy.num_replicas_in_sync
    global_batch = cfg.batch_size * replicas
    train = ShardStream(manifest, "train", batch_size=global_batch, shuffle=True, seed=cfg.seed)
    has_val = bool(manifest.shards_of("val"))
    val = ShardStream(manifest, "val", batch_size=global_batch, shuffle=False) if has_val else None
    monitor = "val_loss" if has_val else "loss"
    shape = tuple(manifest.image_shape)
    weights_cls = class_weights(manifest.class_counts("train")) if cfg.class_weights else None
    verbose = (1 if sys.stdout.isatty() else 2) if verbose is None else verbose
    write_json(run / RUN_INFO_NAME, {
        "class_names": manifest.class_names, "image_shape": list(shape),
        "build_dir": str(Path(cfg.build_dir).resolve()), "replicas": replicas,
        "global_batch_size": global_batch, "mixed_precision": mixed, "xla": jit,
        "gpu": gpu, "train_samples": train.num_samples,
        "val_samples": val.num_samples if val else 0,
    })
    ckdir = run / "checkpoints"
    ckdir.mkdir(exist_ok=True)
    coarse_final = ckdir / "coarse-final.weights.h5"

    tensorboard = _tensorboard(run / "tb")

    def run_phase(model: keras.Model, phase: str, end_epoch: int) -> None:
        start = state["epoch"] + 1
        patience_lr = max(1, cfg.patience // 2)
        es = ResumableEarlyStopping(state.get("early_stopping"), monitor=monitor,
                                    patience=max(cfg.patience, 1), restore_best_weights=True)
        if state.get("early_stopping") and (ckdir / "best.weights.h5").is_file():
            es.initial_best_weights = _weights_from_file(model, ckdir / "best.weights.h5")
        rlr = ResumableReduceLR(state.get("reduce_lr"), monitor=monitor, factor=cfg.lr_factor,
                                patience=patience_lr, min_lr=cfg.min_lr)
        ck = RunCheckpoint(run, state, phase, es, rlr)
        callbacks = [es, rlr, ck, *tensorboard, *extra_callbacks]
        if start < end_epoch and not state.get("stopped"):
            model.fit(
                train.dataset(initial_epoch=start, repeat=True),
                steps_per_epoch=train.steps_per_epoch,
                validation_data=val.dataset() if val is not None else None,
                initial_epoch=start, epochs=end_epoch, class_weight=weights_cls,
                callbacks=callbacks, verbose=verbose, shuffle=False,  # the stream shuffles
            )
        elif es.initial_best_weights is not None:
            model.set_weights(es.initial_best_weights)  # what EarlyStopping would have restored

    with strategy.scope():
        if state["phase"] == "coarse":
            if state["checkpoint"]:
                model = _load_checkpoint(run / state["checkpoint"], jit, eager)
            else:
                model = _build(cfg, "coarse", shape, manifest.num_classes, cfg.weights)
                models.set_trainable(model, "coarse", cfg.unfreeze)
                _compile(model, keras.optimizers.Adam(cfg.lr), jit, eager)
            run_phase(model, "coarse", cfg.epochs_coarse)
            save_atomic(coarse_final, model.save_weights)
            state.update(phase="fine", fine_start=state["epoch"] + 1, checkpoint=None,
                         early_stopping=None, reduce_lr=None, stopped=False)
            (ckdir / "best.weights.h5").unlink(missing_ok=True)
            write_json(run / STATE_NAME, state)
        fine_end = state["fine_start"] + cfg.epochs_fine
        if state["checkpoint"]:
            model = _load_checkpoint(run / state["checkpoint"], jit, eager)
        else:
            model = _build(cfg, "fine", shape, manifest.num_classes, "none")
            model.load_weights(coarse_final)
            models.set_trainable(model, "fine", cfg.unfreeze)
            _compile(model, keras.optimizers.Adam(cfg.fine_lr), jit, eager)
        if cfg.epochs_fine:
            run_phase(model, "fine", fine_end)
        save_atomic(run / MODEL_NAME, model.save)
    write_curves(run / "curves.png", state["history"], state["fine_start"])
    state.update(phase="done")
    write_json(run / STATE_NAME, state)
    for p in ckdir.glob("epoch-*.keras"):  # the final model replaces them; keep weights files
        p.unlink()
    last = state["history"][-1] if state["history"] else {}
    return {"epochs": len(state["history"]), "history": state["history"],
            "val_accuracy": last.get("val_accuracy"), "resumed": resume}


def _tensorboard(log_dir: Path) -> list[keras.callbacks.Callback]:
    """TensorBoard logs when the ``tensorboard`` package is there (TF >= 2.20 no longer
    installs it; without it tf.summary fails mid-epoch), else a note and none."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        print(f"note: tensorboard is not installed; {log_dir} is not written", file=sys.stderr)
        return []
    return [keras.callbacks.TensorBoard(str(log_dir), write_graph=False)]


def _weights_from_file(model: keras.Model, path: Path) -> list[np.ndarray]:
    current = model.get_weights()
    model.load_weights(path)
    best = model.get_weights()
    model.set_weights(current)
    return best


def _load_checkpoint(path: Path, jit: bool, eager: bool) -> keras.Model:
    """A model saved by RunCheckpoint, with its optimizer state, recompiled for this machine."""
    try:
        model = keras.saving.load_model(path)
    except Exception as e:  # a damaged zip or h5 raises many types
        raise InputError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e}); "
                         "start again with --overwrite") from None
    _compile(model, model.optimizer, jit, eager)  # the same optimizer object keeps its slots
    return model


def cmd_fit(args) -> int:
    """The ``fit`` subcommand: resolve the config (the stored one when resuming) and train."""
    flags = {k: getattr(args, k, None) for k in (
        "model", "weights", "epochs_coarse", "epochs_fine", "batch_size", "lr", "fine_lr",
        "unfreeze", "patience", "seed", "strategy", "mixed_precision", "xla")}
    flags["build_dir"] = args.dir
    run = Path(args.out)
    base = None
    if args.resume and not args.overwrite and (run / cfgmod.CONFIG_NAME).is_file():
        base = cfgmod.load_run_config(run).to_dict()
    cfg = cfgmod.resolve_config(flags, args.config, base=base)
    summary = fit(cfg, run, resume=bool(args.resume), overwrite=bool(args.overwrite))
    acc = summary.get("val_accuracy")
    print(f"{run}: {summary['epochs']} epochs" + (f", val accuracy {acc:.4f}" if acc else ""))
    return 0

