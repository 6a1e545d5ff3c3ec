"""A run folder's layout, defined once: every name fit writes and evaluate, predict, a resume
and a multi-worker copy read, and the patterns ``fit --overwrite`` may remove."""

from __future__ import annotations

from pathlib import Path

CONFIG_NAME = "config.json"  # the FitConfig, as resolved (a resume reads it back)
STATE_NAME = "state.json"  # where an interrupted fit stands (trainer/train/checkpoint.py)
RUN_INFO_NAME = "run.json"  # facts of the run: class names, image shape, devices, its build
MODEL_NAME = "model.keras"  # the finished model
HISTORY_NAME = "history.csv"
CURVES_NAME = "curves.png"
TB_DIR = "tb"
CHECKPOINT_DIR = "checkpoints"
BEST_WEIGHTS = f"{CHECKPOINT_DIR}/best.weights.h5"
COARSE_FINAL = f"{CHECKPOINT_DIR}/coarse-final.weights.h5"

# Everything fit writes at the top of a run folder.
RUN_FILES = (CONFIG_NAME, STATE_NAME, RUN_INFO_NAME, MODEL_NAME, HISTORY_NAME, CURVES_NAME,
             CHECKPOINT_DIR, TB_DIR)
# The files fit writes inside its sub-folders (frozenaug.common.owned's patterns).
FIT_OWN = {
    CHECKPOINT_DIR: ("epoch-[0-9][0-9][0-9].keras", "*.weights.h5", ".tmp-*"),
    TB_DIR: ("*events.out.tfevents.*", "*/plugins/*", "*.tmp-*", ".tmp-*"),
}


def epoch_checkpoint(epoch: int) -> str:
    """The model + optimizer checkpoint of one Keras epoch, relative to the run folder."""
    return f"{CHECKPOINT_DIR}/epoch-{epoch:03d}.keras"


def fit_inputs(build_dir: str, weights: str, fine_build: str = "") -> list[str]:
    """What fit reads, which its --overwrite must never remove: the builds, a weights file."""
    return [build_dir, *([fine_build] if fine_build else []),
            *([weights] if Path(weights).is_file() else [])]
