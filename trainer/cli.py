"""``frozenaug-train``: fit, evaluate and predict.

Each subcommand's work lives in the module of its stage; this file only parses arguments and
hands them to ``builder.errors.dispatch`` (``InputError`` -> one line on stderr, exit code 2).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from builder.errors import InputError, OneLineParser, dispatch
from trainer.config import MIX_MODES, MODEL_NAMES, OPTIMIZERS, SCHEDULES

PROG = "frozenaug-train"

# subcommand -> "module:function"; each function takes the parsed Namespace and returns an int.
COMMANDS = {
    "fit": "trainer.fit:cmd_fit",
    "evaluate": "trainer.evaluate:cmd_evaluate",
    "predict": "trainer.predict:cmd_predict",
}


def _batch_size(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per batch (fit: per replica; default 64)")


def _test_time(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tta", action="store_true",
                   help="average the softmax over the 8 flips/rotations by 90 degrees (8x cost)")
    p.add_argument("--adapt-bn", action="store_true",
                   help="recompute BatchNorm statistics on the (unlabelled) images predicted, "
                        "per distortion under --distort; the saved model is not changed")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fit", help="train a coarse phase, then fine-tune; resumable")
    p.add_argument("dir", help="build directory (frozenaug-build output)")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--model", default=None, help=f"one of {', '.join(MODEL_NAMES)}")
    p.add_argument("--weights", default=None,
                   help="none (default: train from scratch), imagenet, or a .weights.h5/.keras "
                        "file")
    p.add_argument("--epochs-coarse", type=int, default=None,
                   help="epochs of the first phase (pretrained weights: backbone frozen)")
    p.add_argument("--epochs-fine", type=int, default=None, help="epochs of fine-tuning")
    _batch_size(p)
    p.add_argument("--lr", type=float, default=None, help="coarse-phase learning rate")
    p.add_argument("--fine-lr", type=float, default=None, help="fine-tuning learning rate")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                   help="adamw (default; decoupled weight decay) or adam")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="AdamW weight decay (default 0.05)")
    p.add_argument("--schedule", choices=SCHEDULES, default=None,
                   help="cosine: linear warm-up then cosine decay (default); plateau: "
                        "ReduceLROnPlateau on the val cross-entropy")
    p.add_argument("--warmup-epochs", type=float, default=None,
                   help="cosine schedule: epochs of linear warm-up (default 1)")
    p.add_argument("--label-smoothing", type=float, default=None,
                   help="label smoothing of the loss (default 0.1)")
    p.add_argument("--precise-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="recompute BatchNorm statistics with the final weights over ~4,000 "
                        "training images (default on)")
    p.add_argument("--mix", choices=MIX_MODES, default=None,
                   help="build: MixUp/CutMix as frozen in the shards (default); fresh: drawn "
                        "anew every epoch while reading (build without a mix stage)")
    p.add_argument("--unfreeze", type=int, default=None,
                   help="top backbone layers trained while fine-tuning (BatchNorm stays frozen)")
    p.add_argument("--patience", type=int, default=None, help="EarlyStopping patience")
    p.add_argument("--seed", type=int, default=None, help="random seed")
    p.add_argument("--strategy", choices=["default", "mirrored"], default=None,
                   help="mirrored: tf.distribute.MirroredStrategy over all GPUs")
    p.add_argument("--mixed-precision", choices=["auto", "on", "off"], default=None,
                   help="mixed_float16 (auto: when a GPU is present)")
    p.add_argument("--xla", choices=["auto", "on", "off"], default=None,
                   help="jit_compile (auto: when a GPU is present)")
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=None,
                   help="check every train/val shard's sha256 against the manifest before "
                        "training (one extra read of the build; catches changed image bytes)")
    p.add_argument("--config", default=None, help="a fit config file (JSON or YAML)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")

    p = sub.add_parser("evaluate", help="accuracy, macro F1, confusion matrix; --distort")
    p.add_argument("run", help="run directory (fit output)")
    p.add_argument("input", nargs="?", default=None,
                   help="build directory, .npz or class folder (default: the run's build)")
    p.add_argument("--out", required=True, help="folder for metrics.json and confusion.png")
    p.add_argument("--split", choices=["train", "val", "test"], default="test",
                   help="split of a build directory (default test)")
    p.add_argument("--distort", action="store_true",
                   help="add a robustness table under strong distortions")
    p.add_argument("--severities", type=int, default=3, help="distortion severities 1..N (<=5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the distortions")
    _batch_size(p)
    _test_time(p)

    p = sub.add_parser("predict", help="class and per-class probabilities as CSV")
    p.add_argument("run", help="run directory (fit output)")
    p.add_argument("input", help="build directory, .npz, a folder per class, or a flat "
                   "folder of images")
    p.add_argument("--out", required=True, help="CSV to write")
    p.add_argument("--split", choices=["train", "val", "test"], default="test",
                   help="split of a build directory (default test)")
    _batch_size(p)
    _test_time(p)
    return parser


SEED_MAX = 2**32 - 1  # what TensorFlow and Keras seeds accept
BATCH_MAX = 65536


def _exists(path: str, what: str, folder: bool | None) -> None:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such {what}")
    if folder is True and not p.is_dir():
        raise InputError(f"{path}: is a file, expected a {what}")
    if folder is False and p.is_dir():
        raise InputError(f"{path}: is a folder, expected a {what}")


def precheck(args: argparse.Namespace) -> None:
    """The checks that need no TensorFlow (paths, flag ranges), run before it is imported:
    a mistyped command fails at once, and with nothing but its one line on stderr."""
    seed = getattr(args, "seed", None)
    if seed is not None and not 0 <= seed <= SEED_MAX:
        raise InputError(f"--seed: must be in 0..{SEED_MAX}, got {seed}")
    if args.command == "fit":
        _exists(args.dir, "build directory", True)
        if args.config is not None:
            _exists(args.config, "config file", False)
        if Path(args.out).exists() and not Path(args.out).is_dir():
            raise InputError(f"{args.out}: exists and is not a folder (--out names the run "
                             "folder)")
        from dataclasses import fields

        from trainer.config import FitConfig, resolve_config  # no TensorFlow in there

        keys = {f.name for f in fields(FitConfig)} - {"build_dir"}
        flags = {k: v for k, v in vars(args).items() if k in keys and v is not None}
        resolve_config({**flags, "build_dir": args.dir}, args.config)
        from builder.format import load_manifest

        classes = load_manifest(args.dir).num_classes
        if classes < 2:
            raise InputError(f"{args.dir}: the build has {classes} class; a classifier needs "
                             "at least 2 (build from data with two or more classes)")
        return
    if args.batch_size is not None and not 1 <= args.batch_size <= BATCH_MAX:
        raise InputError(f"--batch-size: must be in 1..{BATCH_MAX}, got {args.batch_size}")
    if args.command == "evaluate":
        from trainer.distort import MAX_SEVERITY

        if not 1 <= args.severities <= MAX_SEVERITY:
            raise InputError(f"--severities: must be 1..{MAX_SEVERITY}, got {args.severities}")
    _exists(args.run, "run directory", True)
    from trainer.evaluate import read_run_files  # config.json and run.json, no TensorFlow

    read_run_files(args.run)
    out = Path(args.out)
    if args.command == "evaluate":
        if out.exists() and not out.is_dir():
            raise InputError(f"{out}: is a file; --out names the folder for metrics.json")
    elif out.is_dir():
        raise InputError(f"{out}: is a folder; --out names the CSV file to write")
    else:
        from builder.owned import check_not_input
        from trainer.config import CONFIG_NAME, MODEL_NAME, RUN_INFO_NAME

        run_files = [Path(args.run) / n for n in (MODEL_NAME, CONFIG_NAME, RUN_INFO_NAME)]
        check_not_input(out, [args.input, *run_files], "writing the CSV there", inside_ok=True)


FIT_FLAGS = ("model", "weights", "epochs_coarse", "epochs_fine", "batch_size", "lr", "fine_lr",
             "optimizer", "weight_decay", "schedule", "warmup_epochs", "label_smoothing", "mix",
             "precise_bn",
             "unfreeze", "patience", "seed", "strategy", "mixed_precision", "xla", "verify")


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and Keras with file descriptor 2 pointed at /dev/null.

    Their C++ start-up logging (absl's "before InitializeLog" warning, the oneDNN note) is
    written before TF_CPP_MIN_LOG_LEVEL applies, so without this every one-line error would
    follow 4 lines of noise. A failing import still reports: its exception is raised after
    fd 2 is restored.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
        try:
            import keras  # noqa: F401
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
    finally:
        os.close(saved)
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    args = build_parser().parse_args(argv)
    hint = "run the same command with --resume to continue"
    if argv is not None:  # in process (tests): the caller's interpreter goes on
        return dispatch(PROG, "trainer.cli:_run", args, hint)
    # The console script exits here, whatever happened: a thread that a library left running
    # (tf.data, a prefetching reader) must not keep a failed command alive.
    try:
        code = dispatch(PROG, "trainer.cli:_run", args, hint)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _run(args: argparse.Namespace) -> int:
    precheck(args)
    import_tensorflow_quietly()
    module, func = COMMANDS[args.command].split(":")
    import importlib

    return int(getattr(importlib.import_module(module), func)(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
