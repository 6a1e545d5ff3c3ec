"""``frozenaug-build``: scan, clean, build, verify, inspect and preview.

Each subcommand's work lives in the module of its stage; this file parses arguments, checks
the flags before any heavy import, and hands the command to ``frozenaug.process.dispatch.dispatch``
(``InputError`` -> one line on stderr, exit code 2). The report commands (scan, clean,
verify, inspect, preview) keep their ``cmd_*`` in their stage's module: there the command is
the stage's output itself, not a wrapper around it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from frozenaug.common.errors import OneLineParser
from frozenaug.process.dispatch import dispatch

PROG = "frozenaug-build"

# subcommand -> "module:function"; each function takes the parsed Namespace and returns an int.
COMMANDS = {
    "scan": "frozenaug.builder.cli:_scan",  # flags checked by the build's rules, then the stage
    "clean": "frozenaug.builder.cli:_clean",
    "build": "frozenaug.builder.cli:cmd_build",
    "verify": "frozenaug.builder.inspect.verify:cmd_verify",
    "inspect": "frozenaug.builder.inspect.verify:cmd_inspect",
    "preview": "frozenaug.builder.inspect.preview:cmd_preview",
}


def build_parser() -> argparse.ArgumentParser:
    from frozenaug.builder.config import CLEAN_OPTIONS, OPTIONS, SCAN_OPTIONS
    from frozenaug.common.options import add_flags

    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("scan", help="find duplicates, label conflicts and injected outliers")
    add_flags(p, SCAN_OPTIONS)

    p = sub.add_parser("clean", help="scan, remove what the scan flags, and split")
    add_flags(p, CLEAN_OPTIONS)

    p = sub.add_parser("build", help="clean, split and write K frozen augmented epochs as shards")
    add_flags(p, OPTIONS.values())
    p.add_argument("--config", default=None, help="a build config file (JSON or YAML)")

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


def _scan(args: argparse.Namespace) -> int:
    from frozenaug.builder.config import SCAN_OPTIONS, check_flags

    check_flags(args, SCAN_OPTIONS)
    from frozenaug.builder.clean.cleaning import cmd_scan

    return cmd_scan(args)


def _clean(args: argparse.Namespace) -> int:
    from frozenaug.builder.config import CLEAN_OPTIONS, check_flags

    check_flags(args, CLEAN_OPTIONS)
    from frozenaug.builder.clean.cleaning import cmd_clean

    return cmd_clean(args)


def cmd_build(args: argparse.Namespace) -> int:
    """Flags and config file checked before the build's heavy imports (albumentations, joblib):
    a mistyped flag fails in a fraction of a second."""
    from frozenaug.builder.config import load_build_config
    from frozenaug.format import FINISH_DIR

    cfg = load_build_config(args)
    from frozenaug.builder.write.build import UP_TO_DATE, run_build

    r = run_build(cfg)
    if r.status == UP_TO_DATE:
        print(f"{cfg.out}: up to date (its manifest matches this config and input)")
        return 0
    _report(r, "")
    if r.finish is not None:
        _report(r.finish, f"finishing build {cfg.finish} in {Path(cfg.out) / FINISH_DIR}: ")
    return 0


def _report(r: Any, what: str) -> None:
    rate = r.images_written / r.write_seconds if r.write_seconds > 0 else 0.0
    kept = f", kept {r.shards_kept} finished shards" if r.shards_kept else ""
    if r.status != "built":
        print(f"{what}{r.status}")
        return
    print(
        f"{what}wrote {r.images_written} images in {r.shards_written} shards{kept}: "
        f"{rate:,.0f} images/s, {r.bytes_written / 2**20:,.1f} MiB, "
        f"{r.write_seconds:.1f} s writing, {r.wall_seconds:.1f} s wall"
    )


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network call from a build
    args = build_parser().parse_args(argv)
    hint = "run the same command again to resume"
    if argv is not None:  # in process (tests): leave the caller's signals and stdout alone
        return dispatch(PROG, COMMANDS[args.command], args, hint)
    from frozenaug.process.console import run_console

    return run_console(PROG, COMMANDS[args.command], args, hint)


if __name__ == "__main__":
    sys.exit(main())
