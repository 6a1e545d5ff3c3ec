"""The fit configuration: defaults <- an optional config file (JSON/YAML) <- command-line flags.

Keys are locked: a misspelt key in a config file is an error, not a silently ignored option.
The resolved configuration is stored verbatim as ``RUN/config.json``; a later ``fit`` into the
same run directory compares against it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from builder.config import read_mapping_file
from builder.errors import InputError

# The run directory's files, named once for fit, evaluate and predict.
CONFIG_NAME = "config.json"
STATE_NAME = "state.json"
RUN_INFO_NAME = "run.json"  # facts of the run: class names, image shape, devices
MODEL_NAME = "model.keras"
# --model values; trainer.models builds them (kept here, free of keras, for the CLI's --help).
MODEL_NAMES = ("small_resnet", "small_resnet_wide", "simple_cnn", "efficientnetv2b0",
               "efficientnetv2b3", "convnext_tiny", "convnext_small", "convnext_base")
STRATEGIES = ("default", "mirrored")
TRISTATE = ("auto", "on", "off")
OPTIMIZERS = ("adamw", "adam")
SCHEDULES = ("cosine", "plateau")  # cosine decay after a linear warm-up | ReduceLROnPlateau
MIX_MODES = ("build", "fresh")  # MixUp/CutMix as frozen in the build | drawn anew each epoch


@dataclass
class FitConfig:
    """Everything that decides what a ``fit`` run trains (not where it writes).

    The defaults train ``small_resnet`` from scratch in one phase (a CPU or an air-gapped
    server needs no download). The original project's transfer recipe is
    ``model=convnext_tiny, weights=imagenet, epochs_coarse=10, epochs_fine=20, lr=1e-3,
    fine_lr=1e-5`` (README, "Models").
    """

    build_dir: str = ""
    model: str = "small_resnet"
    weights: str = "none"  # imagenet | none | PATH (.weights.h5 or .keras)
    epochs_coarse: int = 30  # the first (with pretrained weights: backbone frozen) phase
    epochs_fine: int = 0  # fine-tuning phase
    batch_size: int = 64  # per replica
    lr: float = 2e-3  # first phase's peak learning rate
    fine_lr: float = 1e-5  # fine-tuning phase
    optimizer: str = "adamw"
    weight_decay: float = 0.05  # AdamW's decoupled weight decay
    schedule: str = "cosine"
    warmup_epochs: float = 1.0  # cosine: linear warm-up from 0, then decay to lr / 100
    label_smoothing: float = 0.1
    mix: str = "build"
    precise_bn: bool = True  # recompute BatchNorm statistics with the final weights
    unfreeze: int = 30  # top backbone layers trained in the fine phase
    patience: int = 8  # EarlyStopping; ReduceLROnPlateau waits max(1, patience // 2)
    lr_factor: float = 0.5  # ReduceLROnPlateau
    min_lr: float = 1e-7
    seed: int = 0
    head_units: list[int] = field(default_factory=lambda: [256, 128])
    dropout: float = 0.3
    head_l2: float = 1.3e-5  # coarse phase, on the head's Dense kernels
    fine_l1: float = 1.5e-4  # fine phase, L1L2 on the head's Dense kernels
    fine_l2: float = 4e-4
    output_l2: float = 1e-4  # always, on the softmax layer's kernel
    class_weights: bool = True  # from the split's train class counts (before augmentation)
    strategy: str = "default"
    mixed_precision: str = "auto"  # auto: on when a GPU is present
    xla: str = "auto"  # auto: jit_compile when a GPU is present
    verify: bool = False  # sha256 of every train/val shard against the manifest before training

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self, where: str = "config") -> FitConfig:
        """Check values up front; raise InputError naming the key and the allowed range."""

        def bad(key: str, what: str) -> InputError:
            return InputError(f"{where}: {key}={getattr(self, key)!r}: {what}")

        for key in ("epochs_coarse", "epochs_fine", "unfreeze", "patience"):
            if int(getattr(self, key)) < 0:
                raise bad(key, "must be >= 0")
        if self.epochs_coarse + self.epochs_fine < 1:
            raise InputError(f"{where}: epochs_coarse + epochs_fine must be >= 1")
        if not 1 <= self.batch_size <= 65536:
            raise bad("batch_size", "must be in 1..65536")
        if not 0 <= self.seed <= 2**32 - 1:  # TensorFlow's and Keras' seed range
            raise bad("seed", "must be in 0..4294967295")
        for key in ("epochs_coarse", "epochs_fine"):
            if int(getattr(self, key)) > 100_000:
                raise bad(key, "must be <= 100000")
        for key in ("lr", "fine_lr"):
            v = float(getattr(self, key))
            if not (math.isfinite(v) and v > 0):
                raise bad(key, "must be a positive number")
        for key, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES),
                             ("mix", MIX_MODES)):
            if getattr(self, key) not in allowed:
                raise bad(key, f"allowed: {', '.join(allowed)}")
        if not (math.isfinite(self.weight_decay) and 0 <= self.weight_decay < 1):
            raise bad("weight_decay", "must be in [0, 1)")
        if not (math.isfinite(self.warmup_epochs) and 0 <= self.warmup_epochs <= 1000):
            raise bad("warmup_epochs", "must be in [0, 1000]")
        if not (math.isfinite(self.label_smoothing) and 0 <= self.label_smoothing < 1):
            raise bad("label_smoothing", "must be in [0, 1)")
        if not 0 < self.lr_factor < 1:
            raise bad("lr_factor", "must be in (0, 1)")
        if not 0 <= self.dropout < 1:
            raise bad("dropout", "must be in [0, 1)")
        for key in ("head_l2", "fine_l1", "fine_l2", "output_l2", "min_lr"):
            if not (math.isfinite(float(getattr(self, key))) and float(getattr(self, key)) >= 0):
                raise bad(key, "must be a finite number >= 0")
        if not self.head_units or any(not 1 <= int(u) <= 65536 for u in self.head_units):
            raise bad("head_units", "must be a non-empty list of integers in 1..65536")
        if self.strategy not in STRATEGIES:
            raise bad("strategy", f"allowed: {', '.join(STRATEGIES)}")
        for key in ("mixed_precision", "xla"):
            if getattr(self, key) not in TRISTATE:
                raise bad(key, f"allowed: {', '.join(TRISTATE)}")
        if not self.weights:
            raise bad("weights", "give imagenet, none or a weights file")
        return self


_TYPES = {f.name: f.type for f in fields(FitConfig)}


def _coerce(key: str, value: Any, where: str) -> Any:
    kind = _TYPES[key]
    try:
        if kind == "int":
            if isinstance(value, bool) or float(value) != int(value):
                raise ValueError
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind == "bool":
            if not isinstance(value, bool):
                raise ValueError
            return value
        if kind == "list[int]":
            items = value.split(",") if isinstance(value, str) else list(value)
            return [int(v) for v in items]
        return str(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: {key}={value!r} is not a valid {kind}") from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON or YAML mapping of FitConfig keys (``-`` or ``_`` both accepted)."""
    return read_mapping_file(path)


def merge(base: dict[str, Any], overrides: dict[str, Any], where: str) -> dict[str, Any]:
    """``base`` updated with the non-None ``overrides``; unknown keys are an InputError."""
    unknown = sorted(set(overrides) - set(_TYPES))
    if unknown:
        raise InputError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_TYPES))}"
        )
    out = dict(base)
    for k, v in overrides.items():
        if v is not None:
            out[k] = _coerce(k, v, where)
    return out


def resolve_config(
    flags: dict[str, Any], config_file: str | None = None, base: dict[str, Any] | None = None
) -> FitConfig:
    """Defaults (or ``base``, e.g. a stored run config) <- config file <- flags (None = unset)."""
    values = dict(base) if base is not None else FitConfig().to_dict()
    if config_file:
        values = merge(values, read_config_file(config_file), str(config_file))
    values = merge(values, flags, "command line")
    return FitConfig(**values).validate()


def load_run_config(run_dir: str | Path) -> FitConfig:
    """The FitConfig stored in ``RUN/config.json``; InputError naming the file if unusable."""
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise InputError(f"{path}: missing; {run_dir} is not a frozenaug-train run directory")
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return resolve_config({}, base=merge(FitConfig().to_dict(), data, str(path)))
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as e:
        raise InputError(f"{path}: unreadable run config ({type(e).__name__}: {e})") from None


# Keys that only check the input and do not change what trains: a resume may change them.
CHECK_KEYS = ("verify",)


def config_differences(a: FitConfig, b: FitConfig) -> list[str]:
    """Keys whose values differ (the build directory compared as a resolved path), leaving
    out ``CHECK_KEYS``."""
    da, db = a.to_dict(), b.to_dict()
    diff = []
    for k in da:
        if k in CHECK_KEYS:
            continue
        if k == "build_dir":
            if Path(da[k]).resolve() != Path(db[k]).resolve():
                diff.append(k)
        elif da[k] != db[k]:
            diff.append(k)
    return diff
