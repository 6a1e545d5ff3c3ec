"""The run state of ``fit`` and the per-epoch checkpoint that makes it resumable.

After every epoch ``RunCheckpoint`` writes, in this order and each atomically: the model with its
optimizer (``checkpoints/epoch-NNN.keras``), the best weights when they improved
(``checkpoints/best.weights.h5``), then ``state.json`` and ``history.csv``. A kill at any point
leaves a state.json that names a complete checkpoint, so ``fit --resume`` continues after that
epoch with the same EarlyStopping and ReduceLROnPlateau counters and the history has the length
of an uninterrupted run. (Keras' ModelCheckpoint and CSVLogger write in place and separately,
which a kill can leave inconsistent, so this callback does both jobs.)

The state is ``RunState``, written as a JSON object of its fields; ``history`` has one row per
epoch: epoch, phase, the logs, learning_rate.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import keras
import numpy as np

from frozenaug.common.atomic import TMP_PREFIX, atomic_path, check_target, write_bytes, write_json
from frozenaug.common.errors import InputError
from frozenaug.common.safeparse import read_json
from frozenaug.trainer.layout import (
    BEST_WEIGHTS,
    CHECKPOINT_DIR,
    HISTORY_NAME,
    STATE_NAME,
    epoch_checkpoint,
)


@dataclass
class RunState:
    """Where a run stands; ``state.json`` holds exactly these fields (``to_json``)."""

    phase: str = "coarse"  # coarse | fine | done
    epoch: int = -1  # the last completed Keras epoch, numbered across both phases
    fine_start: int | None = None  # the fine phase's first epoch, once the coarse one ended
    checkpoint: str | None = None  # run-relative path of the model saved after ``epoch``
    early_stopping: dict[str, Any] | None = None  # the callbacks' counters (None: afresh)
    reduce_lr: dict[str, Any] | None = None
    stopped: bool = False  # EarlyStopping ended this phase
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def next_phase(self) -> None:
        """The coarse phase is over: the fine phase starts after its last epoch."""
        self.phase, self.fine_start = "fine", self.epoch + 1
        self.checkpoint, self.early_stopping, self.reduce_lr, self.stopped = None, None, None, False


def load_state(run: Path) -> RunState:
    """``RUN/state.json`` of an interrupted run, or a fresh state when there is none."""
    path = run / STATE_NAME
    if not path.is_file():
        return RunState()
    try:
        data = read_json(path, "run state")
        if not isinstance(data, dict) or data.get("phase") not in ("coarse", "fine", "done"):
            raise ValueError("not a run state")
        known = {f.name for f in fields(RunState)}
        state = RunState(**{k: v for k, v in data.items() if k in known})
        _check_state(state)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(
            f"{path}: unreadable run state ({e}); start again with --overwrite"
        ) from None
    return state


def _check_state(state: RunState) -> None:
    """Every field's type, so that a damaged state.json fails here, before fit writes."""
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    ckpt_path = state.checkpoint
    problems = [
        ("epoch", is_int(state.epoch) and state.epoch >= -1),
        ("fine_start", state.fine_start is None
         or (is_int(state.fine_start) and state.fine_start >= 0)),
        ("checkpoint", ckpt_path is None or (
            isinstance(ckpt_path, str) and ckpt_path.startswith(CHECKPOINT_DIR + "/")
            and ".." not in ckpt_path.split("/"))),
        ("early_stopping", state.early_stopping is None
         or isinstance(state.early_stopping, dict)),
        ("reduce_lr", state.reduce_lr is None or isinstance(state.reduce_lr, dict)),
        ("stopped", isinstance(state.stopped, bool)),
        ("history", isinstance(state.history, list)
         and all(isinstance(r, dict) for r in state.history)),
    ]
    bad = [k for k, ok in problems if not ok]
    if bad:
        raise ValueError(f"field(s) {', '.join(bad)} damaged")


def save_state(run: Path, state: RunState) -> None:
    write_json(run / STATE_NAME, state.to_json())


def save_atomic(path: Path, saver: Callable[[str], Any]) -> None:
    """``saver(tmp)`` then rename: the temporary keeps the suffix that Keras insists on."""
    check_target(path)  # never rename over a device, FIFO or socket put in the run's place
    tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}")
    try:
        saver(str(tmp))
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:
            e.filename = str(path)  # Keras' writers raise EFBIG/ENOSPC without a name
        raise


def remove_epoch_checkpoints(run: Path, keep: str | None = None) -> None:
    """Delete ``checkpoints/epoch-*.keras`` except the run-relative path ``keep``."""
    keep_name = Path(keep).name if keep else None
    for old in (run / CHECKPOINT_DIR).glob("epoch-*.keras"):
        if old.name != keep_name:
            old.unlink(missing_ok=True)


def weights_from_file(model: keras.Model, path: Path) -> list[np.ndarray]:
    """The weights that ``path`` holds for ``model``, leaving the model's own untouched."""
    from frozenaug.trainer.train.ckmatch import load_weights_checked

    current = model.get_weights()
    load_weights_checked(model, path)
    best = model.get_weights()
    model.set_weights(current)
    return best


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping whose counters (and best weights) survive an interruption.

    ``initial`` is a ``snapshot()`` from the state; set ``initial_best_weights`` (from
    ``BEST_WEIGHTS``) before training so ``restore_best_weights`` still has them.
    """

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
    """After each epoch: model+optimizer, best weights, then state.json and history.csv.

    Runs after ``es`` and ``rlr`` (None under a learning-rate schedule) in the callback list,
    so their counters include this epoch; ``state`` is updated in place.
    """

    def __init__(self, run: Path, state: RunState, phase: str,
                 es: ResumableEarlyStopping, rlr: ResumableReduceLR | None) -> None:
        super().__init__()
        self.run, self.state, self.phase, self.es, self.rlr = run, state, phase, es, rlr

    def on_epoch_end(self, epoch, logs=None):
        name = epoch_checkpoint(epoch)
        save_atomic(self.run / name, self.model.save)
        if self.es.best_epoch == epoch:
            save_atomic(self.run / BEST_WEIGHTS, self.model.save_weights)
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        row = {"epoch": epoch, "phase": self.phase,
               **{k: float(v) for k, v in (logs or {}).items() if k != "learning_rate"},
               "learning_rate": lr}
        st = self.state
        st.epoch, st.checkpoint, st.early_stopping = epoch, name, self.es.snapshot()
        st.reduce_lr = self.rlr.snapshot() if self.rlr else None
        st.stopped = bool(self.model.stop_training)
        st.history.append(row)
        save_state(self.run, st)
        write_history_csv(self.run / HISTORY_NAME, st.history)
        remove_epoch_checkpoints(self.run, keep=name)


def write_history_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """One table of all epochs; columns in order of first appearance."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_bytes(path, buf.getvalue().encode())


def write_curves(path: Path, rows: list[dict[str, Any]], fine_start: int | None) -> None:
    """Cross-entropy and accuracy over both phases; a dotted line where fine-tuning starts.

    The left panel shows ``ce``/``val_ce`` (what EarlyStopping watches: no label smoothing, no
    weight penalty) where the history has them, else ``loss``/``val_loss``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [r["epoch"] + 1 for r in rows]
    first = "ce" if rows and "ce" in rows[0] else "loss"
    for ax, metric in zip(axes, (first, "accuracy"), strict=True):
        for key, style in ((metric, "-"), (f"val_{metric}", "--")):
            ys = [r.get(key, float("nan")) for r in rows]
            if rows and key in rows[0]:
                ax.plot(epochs, ys, style, marker="o", ms=3, label=key)
        if fine_start is not None and rows and fine_start < len(rows):
            ax.axvline(fine_start + 0.5, color="grey", ls=":", label="fine-tuning starts")
        ax.set_xlabel("epoch")
        ax.set_title("cross-entropy" if metric == "ce" else metric)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
