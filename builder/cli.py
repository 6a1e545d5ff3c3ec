"""``frozenaug-build``: scan, clean, build, verify, inspect and preview.

Each subcommand's work lives in the module of its stage; this file only parses arguments and
hands them to ``builder.errors.dispatch`` (``InputError`` -> one line on stderr, exit code 2).
"""

from __future__ import annotations

import argparse
import os
import sys

from builder.errors import OneLineParser, dispatch

PROG = "frozenaug-build"

# subcommand -> "module:function"; each function takes the parsed Namespace and returns an int.
COMMANDS = {
    "scan": "builder.clean:cmd_scan",
    "clean": "builder.clean:cmd_clean",
    "build": "builder.cli:_build",
    "verify": "builder.verify:cmd_verify",
    "inspect": "builder.verify:cmd_inspect",
    "preview": "builder.preview:cmd_preview",
}


def _add_input_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="an AN2DL-style .npz, a MedMNIST .npz, or a folder per class")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--size", default=None, help="image size, N or HxW (default 96)")
    p.add_argument("--classes", default=None,
                   help="class names, comma-separated or a file with one per line")
    p.add_argument("--strict", action="store_true", default=None,
                   help="an unreadable image in a class folder is fatal (default: skip, list)")
    p.add_argument("--medmnist-split", action="store_true", default=None,
                   help="keep a MedMNIST file's official train/val/test split")
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: all cores)")


def _add_scan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threshold", type=int, default=None,
                   help="max Hamming distance between perceptual hashes of near-duplicates")
    p.add_argument("--outlier-min", type=int, default=None,
                   help="a picture repeated at least this often is an injected outlier")


def _add_split_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", default=None, help="train,val,test fractions (default 0.64,0.16,0.2)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("scan", help="find duplicates, label conflicts and injected outliers")
    _add_input_args(p)
    _add_scan_args(p)

    p = sub.add_parser("clean", help="scan, remove what the scan flags, and split")
    _add_input_args(p)
    _add_scan_args(p)
    _add_split_args(p)

    p = sub.add_parser("build", help="clean, split and write K frozen augmented epochs as shards")
    _add_input_args(p)
    _add_scan_args(p)
    _add_split_args(p)
    p.add_argument("--config", default=None, help="a build config file (JSON or YAML)")
    p.add_argument("--epochs", type=int, default=None, help="frozen epochs K (default 3)")
    p.add_argument("--policy", default=None,
                   help="a preset (none, light, heavy) or a policy file (default heavy)")
    p.add_argument("--drop-family", default=None,
                   help="leave one distortion family out of the policy (geometric, blur, "
                        "compression, colour, noise, occlusion): train on it, then evaluate "
                        "--distort shows how the model copes with that unseen family; or mix, "
                        "the MixUp/CutMix stage, for fit --mix fresh")
    p.add_argument("--shard-size", type=int, default=None, help="images per shard")
    p.add_argument("--no-clean", action="store_true", default=None,
                   help="skip the scan; keep every input image")
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="replace a build of another config in --out")
    p.add_argument("--backend", choices=["loky", "dask"], default=None,
                   help="joblib backend (dask needs --scheduler)")
    p.add_argument("--scheduler", default=None, help="dask.distributed scheduler address")

    p = sub.add_parser("verify", help="check every shard against the manifest")
    p.add_argument("dir", help="build directory")

    p = sub.add_parser("inspect", help="print a summary table of a build")
    p.add_argument("dir", help="build directory")

    p = sub.add_parser("preview", help="draw originals beside their augmented versions")
    p.add_argument("dir", help="build directory")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--input", default=None, help="the input data set (default: the manifest's)")
    p.add_argument("--n", type=int, default=8, help="samples to draw")
    return parser


def _build(args: argparse.Namespace) -> int:
    """Flags and config file checked before the build's heavy imports (albumentations, joblib):
    a mistyped flag fails in a fraction of a second."""
    from builder.config import load_build_config

    load_build_config(args)
    from builder.build import cmd_build

    return cmd_build(args)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network call from a build
    args = build_parser().parse_args(argv)
    return dispatch(PROG, COMMANDS[args.command], args, "run the same command again to resume")


if __name__ == "__main__":
    sys.exit(main())
