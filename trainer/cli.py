"""``frozenaug-train``: fit, evaluate and predict.

Each subcommand's work lives in the module of its stage; this file only parses arguments and
hands them to ``builder.errors.dispatch`` (``InputError`` -> one line on stderr, exit code 2).
"""

from __future__ import annotations

import argparse
import sys

from builder.errors import dispatch
from trainer.config import MODEL_NAMES

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fit", help="train a coarse phase, then fine-tune; resumable")
    p.add_argument("dir", help="build directory (frozenaug-build output)")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--model", default=None, help=f"one of {', '.join(MODEL_NAMES)}")
    p.add_argument("--weights", default=None,
                   help="imagenet (default), none, or a .weights.h5/.keras file")
    p.add_argument("--epochs-coarse", type=int, default=None, help="epochs, backbone frozen")
    p.add_argument("--epochs-fine", type=int, default=None, help="epochs of fine-tuning")
    _batch_size(p)
    p.add_argument("--lr", type=float, default=None, help="coarse-phase learning rate")
    p.add_argument("--fine-lr", type=float, default=None, help="fine-tuning learning rate")
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

    p = sub.add_parser("predict", help="class and per-class probabilities as CSV")
    p.add_argument("run", help="run directory (fit output)")
    p.add_argument("input", help="build directory, .npz, a folder per class, or a flat "
                   "folder of images")
    p.add_argument("--out", required=True, help="CSV to write")
    p.add_argument("--split", choices=["train", "val", "test"], default="test",
                   help="split of a build directory (default test)")
    _batch_size(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    hint = "run the same command with --resume to continue"
    return dispatch(PROG, COMMANDS[args.command], args, hint)


if __name__ == "__main__":
    sys.exit(main())
