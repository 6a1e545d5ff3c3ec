"""The fit configuration: defaults <- an optional config file (JSON/YAML) <- command-line flags.

Each field of ``FitConfig`` is declared once as an ``option`` (frozenaug.common.options): its type,
default, range and help make the ``fit`` flags, the config-file keys and the checks. No
TensorFlow here: ``fit --help`` and the checks before TensorFlow loads use this module.
Keys are locked: a misspelt key in a config file is an error, not a silently ignored option.
The resolved configuration is stored verbatim as ``RUN/config.json``; a later ``fit`` into the
same run directory compares against it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from frozenaug.common.errors import InputError, brief
from frozenaug.common.options import Option, check_keys, option, options_of, read_keys, resolve
from frozenaug.common.safeparse import read_json
from frozenaug.trainer.layout import CONFIG_NAME

# The run directory's files, named once for fit, evaluate and predict.
# --model values; train.models builds them (kept here, free of keras, for the CLI's --help).
MODEL_NAMES = ("small_resnet", "small_resnet_wide", "simple_cnn", "efficientnetv2b0",
               "efficientnetv2b3", "convnext_tiny", "convnext_small", "convnext_base")
# The models built for training from scratch (no ImageNet weights, input_norm allowed).
SCRATCH_MODEL_NAMES = ("simple_cnn", "small_resnet", "small_resnet_wide")
INPUT_NORMS = ("auto", "none", "image")
# What input_norm "auto" gives: the residual nets, where it measured better (README, "Models");
# simple_cnn stays as it was, a plain baseline for tests and smoke runs.
AUTO_INPUT_NORM_MODELS = ("small_resnet", "small_resnet_wide")
STRATEGIES = ("default", "mirrored", "multiworker")
TRISTATE = ("auto", "on", "off")
OPTIMIZERS = ("adamw", "adam")
SCHEDULES = ("cosine", "plateau")  # cosine decay after a linear warm-up | ReduceLROnPlateau
MIX_MODES = ("build", "fresh")  # MixUp/CutMix as frozen in the build | drawn anew each epoch
# none | AugMix's Jensen-Shannon consistency across frozen views (trainer/train/consistency.py)
CONSISTENCY_MODES = ("none", "jsd")


def _units(v: Any) -> list[int]:
    items = v.split(",") if isinstance(v, str) else v
    if not isinstance(items, list) or not items or not all(
            isinstance(u, (int, str)) and not isinstance(u, bool) and 1 <= int(u) <= 65536
            for u in items):
        raise ValueError(f"must be a non-empty list of integers in 1..65536, got {brief(v)}")
    return [int(u) for u in items]


# What fine_lr "auto" gives (README, "Models"): a from-scratch finishing phase continues the
# net at ~lr/10 (2e-4 measured best after the default lr 2e-3); fine-tuning a pretrained
# backbone, the transfer recipe's 1e-5 (larger steps wreck the pretrained features).
FINE_LR_SCRATCH = 2e-4
FINE_LR_PRETRAINED = 1e-5


def _lr_or_auto(v: Any) -> float | str:
    """"auto", or a positive finite learning rate (a flag's text or a file's number)."""
    if v == "auto":
        return "auto"
    try:
        lr = float(v) if isinstance(v, (int, float, str)) and not isinstance(v, bool) else None
    except ValueError:
        lr = None
    if lr is None or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"must be auto or a positive number, got {v!r}")
    return lr


def _int_or(*words: str) -> Callable[[Any], int | str]:
    """A parser for one of ``words``, or an integer in 0..100000 (a flag's text or a file's
    number)."""
    def parse(v: Any) -> int | str:
        if v in words:
            return v
        try:
            n = int(v) if isinstance(v, (int, str)) and not isinstance(v, bool) else None
        except ValueError:
            n = None
        if n is None or not 0 <= n <= 100_000 or (isinstance(v, str) and not v.strip().isdigit()):
            raise ValueError(f"must be {', '.join(words)} or an integer in 0..100000, "
                             f"got {v!r}")
        return n
    return parse


_epochs_or_auto = _int_or("auto")

# What epochs_coarse "auto" gives. From scratch, 120: on the blood cells 80 heavy epochs beat 40
# on val in every fit seed, and 120 beat 80 on val compound in every fit seed (README, "Model
# quality"); build + fit took 44 min on 2 quiet CPU cores (near 60 on a slow day). With
# pretrained weights the coarse phase trains the head on a frozen backbone: the original
# project's transfer recipe gave it 10 before fine-tuning the top.
COARSE_EPOCHS_SCRATCH = 120
COARSE_EPOCHS_PRETRAINED = 10

# What patience "auto" gives under schedule=plateau, where the patience also paces the rate's
# cuts; under cosine it is none: the schedule decays to lr/100 at the end it was given, and a
# stop before that ends the run at a high rate (README, "Model quality": patience 8 cut a
# 43-epoch run at epoch 30 and cost it 0.045 compound accuracy on val).
PLATEAU_PATIENCE = 8


# What epochs_fine "auto" gives with a finishing build: the recipe's 3 epochs (README, "Heavy,
# then light": measured with 3).
FINISH_EPOCHS = 3
_ZERO_ONE = {"lo": 0, "hi": 1, "hi_open": True}  # [0, 1)
_POSITIVE = {"lo": 0, "lo_open": True}
_SEED_MAX = 2**32 - 1  # TensorFlow's and Keras' seed range


@dataclass
class FitConfig:
    """Everything that decides what a ``fit`` run trains (not where it writes).

    The defaults train ``small_resnet`` from scratch in one phase (a CPU or an air-gapped
    server needs no download). The original project's transfer recipe is
    ``model=convnext_tiny, weights=imagenet, epochs_coarse=10, epochs_fine=20, lr=1e-3``, with
    ``fine_lr`` auto giving its 1e-5 (README, "Models"). Fields without a flag are config-file
    keys only.
    """

    build_dir: str = option("", "build directory (frozenaug-build output)", flag=None,
                            empty_ok=True)
    # frozenaug.trainer.train.models checks the name (its message lists the allowed ones)
    model: str = option("small_resnet", f"one of {', '.join(MODEL_NAMES)}")
    weights: str = option("none", "none (train from scratch), imagenet, or a .weights.h5/.keras "
                          "file")
    input_norm: str = option("auto", "image: standardise each image's channels (zero mean, "
                             "unit variance over its pixels) before a from-scratch model, which "
                             "makes it blind to brightness, contrast and stain/white-balance "
                             "gains (see trainer/train/models.py); auto: image for small_resnet "
                             "and small_resnet_wide, else none", choices=INPUT_NORMS)
    epochs_coarse: int | str = option(
        "auto", "epochs of the first phase (pretrained weights: backbone frozen); auto: "
        f"{COARSE_EPOCHS_SCRATCH} from scratch, {COARSE_EPOCHS_PRETRAINED} with pretrained "
        "--weights", parse=_epochs_or_auto)
    epochs_fine: int | str = option(
        "auto", "epochs of fine-tuning (from scratch: a finishing phase); auto: 3 when there is "
        "a fine build (below), else 0", parse=_epochs_or_auto)
    fine_build: str = option(
        "auto", "the fine phase trains on this build's train split instead: another build of "
        "the same input and split, e.g. --policy light to finish a heavy run (README, Models); "
        "auto: from scratch, the build's own finishing build (frozenaug-build build --finish, "
        "on by default after the heavy preset) if it has one; none: the build itself",
        empty_ok=True)
    batch_size: int = option(64, "images per batch, per replica", lo=1, hi=65536)
    lr: float = option(2e-3, "coarse-phase (peak) learning rate", **_POSITIVE)
    fine_lr: float | str = option(
        "auto", "fine-phase (peak) learning rate; auto: 2e-4 from scratch (a finishing phase), "
        "1e-5 with pretrained --weights (fine-tuning the backbone); run.json records the value "
        "used", parse=_lr_or_auto)
    optimizer: str = option("adamw", "adamw (decoupled weight decay) or adam", choices=OPTIMIZERS)
    weight_decay: float = option(0.05, "AdamW weight decay", **_ZERO_ONE)
    schedule: str = option("cosine", "cosine: linear warm-up then cosine decay to lr / 100; "
                           "plateau: ReduceLROnPlateau on the val cross-entropy",
                           choices=SCHEDULES)
    warmup_epochs: float = option(1.0, "cosine schedule: epochs of linear warm-up", lo=0,
                                  hi=1000)
    label_smoothing: float = option(0.1, "label smoothing of the loss", **_ZERO_ONE)
    mix: str = option("build", "build: MixUp/CutMix as frozen in the shards; fresh: drawn anew "
                      "every epoch while reading (build without a mix stage)", choices=MIX_MODES)
    consistency: str = option("none", "jsd: each batch holds --consistency-views frozen views "
                              "of every image (V frozen epochs, no augmentation cost) and the "
                              "loss adds AugMix's Jensen-Shannon consistency across their "
                              "predictions to the anchor view's CE; a step costs ~V plain "
                              "steps; needs a build without frozen MixUp/CutMix "
                              "(--drop-family mix) and K >= V", choices=CONSISTENCY_MODES)
    consistency_views: int = option(2, "views of each image per batch with --consistency", lo=2,
                                    hi=3)
    consistency_weight: float = option(12.0, "weight of the consistency term (AugMix: 12)", lo=0,
                                       hi=1000)
    precise_bn: bool = option(True, "recompute BatchNorm statistics with the final weights over "
                              "~4,000 training images", switch=True)
    unfreeze: int = option(30, "top backbone layers trained while fine-tuning (BatchNorm stays "
                           "frozen)", lo=0)
    patience: int | str = option(
        "auto", "EarlyStopping patience in epochs of no val_ce improvement (the best epoch's "
        "weights are restored either way); none: train every epoch; auto: none under the "
        f"cosine schedule, {PLATEAU_PATIENCE} under plateau, whose ReduceLROnPlateau waits "
        "max(1, patience // 2)", parse=_int_or("auto", "none"))
    lr_factor: float = option(0.5, "ReduceLROnPlateau factor", lo=0, hi=1, lo_open=True,
                              hi_open=True, flag=None)
    min_lr: float = option(1e-7, "ReduceLROnPlateau floor", lo=0, flag=None)
    seed: int = option(0, "random seed", lo=0, hi=_SEED_MAX)
    head_units: list[int] = option([256, 128], "Dense units of the head", parse=_units,
                                   factory=True, flag=None)
    dropout: float = option(0.3, "dropout before each head layer", **_ZERO_ONE, flag=None)
    head_l2: float = option(1.3e-5, "coarse phase, L2 on the head's Dense kernels", lo=0,
                            flag=None)
    fine_l1: float = option(1.5e-4, "fine phase, L1 on the head's Dense kernels", lo=0,
                            flag=None)
    fine_l2: float = option(4e-4, "fine phase, L2 on the head's Dense kernels", lo=0, flag=None)
    output_l2: float = option(1e-4, "always, L2 on the softmax layer's kernel", lo=0, flag=None)
    class_weights: bool = option(True, "weight the loss by the split's train class counts "
                                 "(before augmentation)", flag=None)
    strategy: str = option("default", "mirrored: tf.distribute.MirroredStrategy over all GPUs; "
                           "multiworker: MultiWorkerMirroredStrategy over the machines TF_CONFIG "
                           "names", choices=STRATEGIES)
    mixed_precision: str = option("auto", "mixed_float16 (auto: when a GPU is present)",
                                  choices=TRISTATE)
    xla: str = option("auto", "jit_compile (auto: when a GPU is present)", choices=TRISTATE)
    verify: bool = option(False, "check every train/val shard's sha256 against the manifest "
                          "before training (one extra read of the build; catches changed image "
                          "bytes)", switch=True)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def model_input_norm(self) -> str:
        """input_norm with "auto" resolved for this model: "image" or "none"."""
        if self.input_norm == "auto":
            return "image" if self.model in AUTO_INPUT_NORM_MODELS else "none"
        return self.input_norm

    @property
    def patience_epochs(self) -> int | None:
        """patience with "auto" resolved: None (never stop early) or epochs, at least 1."""
        if self.patience == "auto":
            return None if self.schedule == "cosine" else PLATEAU_PATIENCE
        return None if self.patience == "none" else max(int(self.patience), 1)

    @property
    def fine_lr_value(self) -> float:
        """fine_lr with "auto" resolved: 1e-5 when fine-tuning pretrained weights (any
        ``weights`` but none), else 2e-4."""
        if self.fine_lr == "auto":
            return FINE_LR_PRETRAINED if self.weights != "none" else FINE_LR_SCRATCH
        return float(self.fine_lr)

    def validate(self, where: str = "config") -> FitConfig:
        """Every field checked by its option (a FitConfig made in code is checked too), and
        the one rule across fields; InputError naming ``where`` and the key."""
        for name, o in OPTIONS.items():
            o.check(getattr(self, name), where)
        if "auto" not in (self.epochs_coarse, self.epochs_fine) and (
                int(self.epochs_coarse) + int(self.epochs_fine) < 1):
            raise InputError(f"{where}: epochs_coarse + epochs_fine must be >= 1, got "
                             f"{self.epochs_coarse} + {self.epochs_fine}")
        if self.fine_build not in ("", "none", "auto") and self.epochs_fine == 0:
            raise InputError(f"{where}: fine_build {self.fine_build} is read by the fine phase "
                             "only; give it epochs (--epochs-fine N)")
        if self.consistency != "none" and (self.mix == "fresh" or self.strategy != "default"):
            what = "mix fresh" if self.mix == "fresh" else f"strategy {self.strategy}"
            raise InputError(f"{where}: consistency {self.consistency} does not support {what} "
                             "yet (views are read and weighed on one replica, unmixed)")
        if self.input_norm == "image" and self.model not in SCRATCH_MODEL_NAMES:
            raise InputError(f"{where}: input_norm {self.input_norm} is only for the "
                             f"from-scratch models ({', '.join(SCRATCH_MODEL_NAMES)}); "
                             f"{self.model} has its own preprocessing")
        return self


OPTIONS: dict[str, Option] = {o.name: o for o in options_of(FitConfig)}
# The fields set by a flag of ``fit`` (build_dir is its positional DIR).
FLAG_NAMES = tuple(name for name, o in OPTIONS.items() if o.flag is not None)


def resolve_recipe(cfg: FitConfig) -> FitConfig:
    """``cfg`` with ``epochs_coarse``, ``fine_build`` and ``epochs_fine`` "auto" made concrete
    from the weights and the build's manifest (what ``config.json`` records, so a resume trains
    the same): from scratch, 120 coarse epochs, then the build's finishing build for 3 (the
    recipe in one command); pretrained, 10 coarse epochs on the build itself and no fine phase
    unless ``epochs_fine`` says so; ``epochs_fine`` 0, no finishing build. ``none`` becomes
    ""."""
    from frozenaug.format import load_manifest  # a JSON file; no TensorFlow

    fine = cfg.fine_build
    if fine == "auto":  # --epochs-fine 0 asks for no finishing phase
        finish = (load_manifest(cfg.build_dir).finish_dir
                  if cfg.weights == "none" and cfg.epochs_fine != 0 else None)
        fine = str(finish) if finish is not None else ""
    fine = "" if fine == "none" else fine
    epochs = cfg.epochs_fine
    if epochs == "auto":
        epochs = FINISH_EPOCHS if fine else 0
    coarse = cfg.epochs_coarse
    if coarse == "auto":
        coarse = COARSE_EPOCHS_PRETRAINED if cfg.weights != "none" else COARSE_EPOCHS_SCRATCH
    return replace(cfg, fine_build=fine, epochs_fine=epochs, epochs_coarse=coarse).validate()


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON or YAML mapping of FitConfig keys (``-`` or ``_`` both accepted), checked."""
    return read_keys(path, OPTIONS.values())


def resolve_config(
    flags: dict[str, Any], config_file: str | None = None, base: dict[str, Any] | None = None
) -> FitConfig:
    """Defaults (or ``base``, e.g. a stored run config) <- config file <- flags (None = unset).

    Raises:
        InputError: an unknown key, a value of the wrong type or out of range.
    """
    values, _ = resolve(OPTIONS.values(), flags, config_file, base)
    return FitConfig(**values).validate(config_file or "command line")


def fit_config(flags: dict[str, Any], config_file: str | None, run: str | Path, *,
               resume: bool, overwrite: bool) -> FitConfig:
    """The config a fit starts with: a resume continues with the run's stored config, under
    the flags and config file given; a new run (or --overwrite) starts from the defaults."""
    base = None
    if resume and not overwrite and (Path(run) / CONFIG_NAME).is_file():
        base = load_run_config(run).to_dict()
    return resolve_recipe(resolve_config(flags, config_file, base=base))


def load_run_config(run_dir: str | Path) -> FitConfig:
    """The FitConfig stored in ``RUN/config.json``; InputError naming the file if unusable."""
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise InputError(f"{path}: missing; {run_dir} is not a frozenaug-train run directory")
    try:
        data = read_json(path, "run config")
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        stored = {**FitConfig().to_dict(), **check_keys(data, OPTIONS.values(), str(path))}
        return resolve_config({}, base=stored)
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
        if k in ("build_dir", "fine_build") and da[k] and db[k]:
            if Path(da[k]).resolve() != Path(db[k]).resolve():
                diff.append(k)
        elif da[k] != db[k]:
            diff.append(k)
    return diff
