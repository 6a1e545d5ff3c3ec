"""``frozenaug-train``: fit, evaluate and predict.

Each subcommand's work lives in the module of its stage; this file parses arguments, checks
what needs no TensorFlow, and turns the arguments into one call of that module (the ``cmd_*``
wrappers, which import it late so that ``--help`` and a mistyped flag stay fast), through
``frozenaug.process.dispatch.dispatch`` (``InputError`` -> one line on stderr, exit code 2).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from frozenaug.common.errors import InputError, OneLineParser
from frozenaug.common.options import add_flags
from frozenaug.process.dispatch import dispatch
from frozenaug.trainer.config import FLAG_NAMES
from frozenaug.trainer.config import OPTIONS as FIT_OPTIONS

PROG = "frozenaug-train"

# subcommand -> its command wrapper below; each takes the parsed Namespace and returns an int.
COMMANDS = {
    "fit": "frozenaug.trainer.cli:cmd_fit",
    "evaluate": "frozenaug.trainer.cli:cmd_evaluate",
    "predict": "frozenaug.trainer.cli:cmd_predict",
}


def _batch_size(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per batch (default 64)")


def _max_pixels(p: argparse.ArgumentParser) -> None:
    from frozenaug.common.imageheaders import DEFAULT_MAX_IMAGE_PIXELS

    p.add_argument("--max-image-pixels", type=int, default=None,
                   help="the most pixels (width x height) one input image may have, checked "
                        "in its header before it is decoded (default "
                        f"{DEFAULT_MAX_IMAGE_PIXELS:,}, 8192x8192)")


def _test_time(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tta", nargs="?", const="d4", default=None, choices=("d4", "d8"),
                   help="average the softmax over the 8 flips/rotations by 90 degrees (d4, the "
                        "default: 8x cost), or those and the same turned by 45 degrees (d8: "
                        "16 views)")
    p.add_argument("--adapt-bn", action="store_true",
                   help="recompute BatchNorm statistics on the (unlabelled) images predicted, "
                        "per distortion under --distort; the saved model is not changed")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fit", help="train from the shards (from scratch, or coarse phase + "
                       "fine-tuning from pretrained weights); resumable")
    p.add_argument("dir", help=FIT_OPTIONS["build_dir"].help)
    p.add_argument("--out", required=True, help="run directory to write")
    add_flags(p, FIT_OPTIONS.values())  # every FitConfig field that has a flag
    p.add_argument("--config", default=None, help="a fit config file (JSON or YAML)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")

    p = sub.add_parser("evaluate", help="accuracy, macro F1, confusion matrix; --distort")
    p.add_argument("paths", nargs="+", metavar="RUN [RUN ...] [INPUT]",
                   help="run directories (fit output; several: an ensemble, the mean of their "
                        "softmax), then the build directory, .npz or class folder to evaluate "
                        "on (default: the first run's build)")
    p.add_argument("--out", required=True, help="folder for metrics.json and confusion.png")
    p.add_argument("--split", choices=["train", "val", "test"], default="test",
                   help="split of a build directory (default test)")
    p.add_argument("--distort", action="store_true",
                   help="add robustness tables: each distortion family alone at severities "
                        "1..--severities, and the headline, compound distortions (2-5 "
                        "families per image at severity 3-5, two of them held out of training)")
    p.add_argument("--severities", type=int, default=3, help="distortion severities 1..N (<=5)")
    p.add_argument("--compound-only", action="store_true",
                   help="with --distort: the compound suite alone, without the single-family "
                        "table (a seventh of the cost)")
    p.add_argument("--seed", type=int, default=0, help="seed of the distortions")
    _batch_size(p)
    _test_time(p)
    _max_pixels(p)

    p = sub.add_parser("predict", help="class and per-class probabilities as CSV")
    p.add_argument("paths", nargs="+", metavar="RUN [RUN ...] INPUT",
                   help="run directories (fit output; several: an ensemble), then the build "
                        "directory, .npz, a folder per class, or a flat folder of images")
    p.add_argument("--out", required=True, help="CSV to write")
    p.add_argument("--split", choices=["train", "val", "test"], default="test",
                   help="split of a build directory (default test)")
    _batch_size(p)
    _test_time(p)
    _max_pixels(p)
    return parser


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
    if args.command == "fit":
        _exists(args.dir, "build directory", True)
        if args.config is not None:
            _exists(args.config, "config file", False)
        if Path(args.out).exists() and not Path(args.out).is_dir():
            raise InputError(f"{args.out}: exists and is not a folder (--out names the run "
                             "folder)")
        from frozenaug.trainer.config import resolve_config, resolve_recipe  # no TensorFlow

        cfg = resolve_recipe(resolve_config(fit_flags(args), args.config))
        if cfg.strategy == "multiworker":
            from frozenaug.trainer.train.multiworker import read_tf_config  # no TensorFlow in there

            read_tf_config()
        from frozenaug.format import load_manifest
        from frozenaug.trainer.buildcheck import check_fine_build, check_trainable

        manifest = load_manifest(args.dir)
        check_trainable(manifest)
        if cfg.fine_build:
            _exists(cfg.fine_build, "--fine-build directory", True)
            check_fine_build(manifest, load_manifest(cfg.fine_build))
        return
    # evaluate and predict take fit's rules for the seed and the batch size
    for name in ("seed", "batch_size"):
        if getattr(args, name, None) is not None:
            FIT_OPTIONS[name].check(getattr(args, name), FIT_OPTIONS[name].flag_name)
    if args.max_image_pixels is not None and not 1 <= args.max_image_pixels <= 1 << 40:
        raise InputError(f"--max-image-pixels: must be an integer in 1..{1 << 40}, got "
                         f"{args.max_image_pixels}")
    if args.command == "evaluate":
        from frozenaug.trainer.assess.distort import MAX_SEVERITY

        if not 1 <= args.severities <= MAX_SEVERITY:
            raise InputError(f"--severities: must be 1..{MAX_SEVERITY}, got {args.severities}")
    from frozenaug.trainer.assess.runs import check_members, split_paths  # no TensorFlow

    args.runs, args.input = split_paths(args.paths, input_required=args.command == "predict")
    for run in args.runs:
        _exists(run, "run directory", True)
    check_members(args.runs)  # config.json and run.json of each
    out = Path(args.out)
    if args.command == "evaluate":
        if out.exists() and not out.is_dir():
            raise InputError(f"{out}: is a file; --out names the folder for metrics.json")
    elif out.is_dir():
        raise InputError(f"{out}: is a folder; --out names the CSV file to write")
    else:
        from frozenaug.common.atomic import check_target
        from frozenaug.common.owned import check_not_input
        from frozenaug.trainer.assess.runs import member_files

        check_target(out)  # a device, FIFO or socket: refused before any work

        check_not_input(out, [args.input, *member_files(args.runs)], "writing the CSV there",
                        inside_ok=True)


def fit_flags(args: argparse.Namespace) -> dict:
    """The FitConfig values that fit's command line gives (None: not given)."""
    return {**{k: getattr(args, k, None) for k in FLAG_NAMES}, "build_dir": args.dir}


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
        return dispatch(PROG, "frozenaug.trainer.cli:_run", args, hint)
    # The console script exits here, whatever happened: a thread that a library left running
    # (tf.data, a prefetching reader) must not keep a failed command alive.
    from frozenaug.process.console import run_console

    try:
        code = run_console(PROG, "frozenaug.trainer.cli:_run", args, hint)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def cmd_fit(args: argparse.Namespace) -> int:
    """Resolve the config (the stored one when resuming) and train."""
    from frozenaug.trainer import config as cfgmod
    from frozenaug.trainer.train.fit import fit

    run = Path(args.out)
    cfg = cfgmod.fit_config(fit_flags(args), args.config, run, resume=bool(args.resume),
                            overwrite=bool(args.overwrite))
    summary = fit(cfg, run, resume=bool(args.resume), overwrite=bool(args.overwrite))
    acc = summary.get("val_accuracy")
    shown = "" if acc is None else f", val accuracy {acc:.4f}"
    print(f"{run}: {summary['epochs']} epochs{shown}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from frozenaug.trainer.assess.evaluate import evaluate, format_robustness
    from frozenaug.trainer.assess.tta import Cost
    from frozenaug.trainer.config import load_run_config
    from frozenaug.trainer.train import buildid
    from frozenaug.trainer.train.runlock import reading_runs

    named = args.input is not None
    data = args.input if named else buildid.default_build(
        args.runs[0], load_run_config(args.runs[0]).build_dir)
    for run in args.runs:  # every member: the test images must be none it trained on
        buildid.check_input(run, data, named)
    with reading_runs(args.runs, data):
        m = evaluate(args.runs, data, args.out, split=args.split, distort_=args.distort,
                     severities=args.severities, seed=args.seed, batch_size=_batch(args),
                     compound_only=args.compound_only,
                     tta=args.tta, adapt_bn=args.adapt_bn,
                     max_pixels=args.max_image_pixels)
    print(f"{m['input']}: {m['samples']} images, accuracy {m['accuracy']:.4f}, "
          f"macro F1 {m['macro_f1']:.4f}")
    cost = Cost(**m["cost"]).describe()
    if cost:
        print(cost)
    if "robustness" in m:
        print(format_robustness(m["accuracy"], m["robustness"]))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from frozenaug.trainer.assess.predict import predict
    from frozenaug.trainer.train import buildid
    from frozenaug.trainer.train.runlock import reading_runs

    for run in args.runs:
        buildid.check_input(run, args.input, named=True)
    with reading_runs(args.runs, args.input):
        n = predict(args.runs, args.input, args.out, split=args.split, batch_size=_batch(args),
                    tta=args.tta, adapt_bn=args.adapt_bn, report=print,
                    max_pixels=args.max_image_pixels)
    print(f"{args.out}: {n} predictions")
    return 0


def _batch(args: argparse.Namespace) -> int:
    return 64 if args.batch_size is None else args.batch_size


def _run(args: argparse.Namespace) -> int:
    precheck(args)
    import_tensorflow_quietly()
    module, func = COMMANDS[args.command].split(":")
    import importlib

    return int(getattr(importlib.import_module(module), func)(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
