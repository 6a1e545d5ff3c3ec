"""common.options: one declaration per option drives the flags, the config keys and the checks."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from frozenaug.builder import config as bconfig
from frozenaug.builder.clean import scan, split
from frozenaug.builder.cli import build_parser as build_cli
from frozenaug.common.errors import InputError
from frozenaug.common.options import Option, add_flags, options_of, read_keys, resolve
from frozenaug.trainer import config as tconfig
from frozenaug.trainer.cli import build_parser as train_cli


def _int(**kw) -> Option:
    return Option(name="epochs", default=3, help="h", kind=int, **kw)


def test_int_rule_and_message():
    o = _int(lo=1, hi=10)
    assert o.check(4, "--epochs") == 4 and o.check(np.int64(10), "x") == 10
    for bad in (0, 11, True, 2.0, "3", None):
        with pytest.raises(InputError) as e:
            o.check(bad, "--epochs")
        assert str(e.value) == (f"--epochs: must be an integer in 1..10, got {bad!r} "
                                f"(epochs={bad!r})")
    assert _int(lo=0).rule() == "an integer >= 0"
    with pytest.raises(InputError, match="^c.yaml: epochs: must be an integer in 1..10, got 0$"):
        o.check(0, "c.yaml")  # a file names the key
    spelt = Option(name="batch_size", default=64, help="h", lo=1, kind=int)
    with pytest.raises(InputError, match=r"^--batch-size: must be an integer >= 1, got 0 "
                                         r"\(batch_size=0\)$"):
        spelt.check(0, "--batch-size")
    assert _int(lo=0, none_ok=True).check(None, "f") is None


def test_float_bounds_open_and_closed_and_never_nan():
    o = Option(name="dropout", default=0.3, help="h", kind=float, lo=0, hi=1, hi_open=True)
    assert o.check(0, "f") == 0.0 and isinstance(o.check(0, "f"), float)
    assert o.rule() == "a number in [0, 1)"
    for bad in (1.0, -0.1, math.nan, math.inf, False):
        with pytest.raises(InputError, match=r"^f: dropout: must be a number in \[0, 1\), got "):
            o.check(bad, "f")
    positive = Option(name="lr", default=1.0, help="h", kind=float, lo=0, lo_open=True)
    assert positive.rule() == "a positive number"
    with pytest.raises(InputError):
        positive.check(0.0, "f")


def test_choices_strings_bools_and_parsers():
    o = Option(name="mix", default="build", help="h", choices=("build", "fresh"))
    assert o.check("fresh", "f") == "fresh"
    with pytest.raises(InputError, match="^f: mix: must be one of build, fresh, got 'later'$"):
        o.check("later", "f")
    lazy = Option(name="x", default=None, help="h", choices=lambda: ("a",), none_ok=True)
    assert lazy.check(None, "f") is None and lazy.check("a", "f") == "a"
    s = Option(name="policy", default="heavy", help="h")
    with pytest.raises(InputError, match="non-empty string"):
        s.check("", "f")
    assert Option(name="out", default="", help="h", empty_ok=True).check("", "f") == ""
    with pytest.raises(InputError, match="true or false"):
        Option(name="strict", default=False, help="h", kind=bool).check("yes", "f")

    def parse(v):
        raise ValueError("not a size")

    p = Option(name="size", default=(1, 1), help="h", parse=parse)
    with pytest.raises(InputError, match="^--size: not a size \\(size='x'\\)$"):
        p.check("x", "--size")
    with pytest.raises(InputError, match="^c.yaml: size: not a size$"):
        p.check("x", "c.yaml")


OPTS = (
    Option(name="epochs", default=3, help="frozen epochs", kind=int, lo=1),
    Option(name="clean", default=True, help="skip it", kind=bool, negate="--no-clean"),
    Option(name="verify", default=False, help="check", kind=bool, switch=True),
    Option(name="strict", default=False, help="fatal", kind=bool),
    Option(name="backend", default="loky", help="b", choices=("loky", "dask")),
    Option(name="head", default=None, help="key only", flag=None, none_ok=True, kind=int),
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_flags(p, OPTS)
    return p


def test_flags_come_from_the_declaration():
    p = _parser()
    ns = p.parse_args([])
    assert vars(ns) == dict.fromkeys(
        ("epochs", "clean", "verify", "strict", "backend"))  # None: not given; no flag for head
    ns = p.parse_args(["--epochs", "2", "--no-clean", "--no-verify", "--strict",
                       "--backend", "dask"])
    assert (ns.epochs, ns.clean, ns.verify, ns.strict, ns.backend) == (2, False, False, True,
                                                                        "dask")
    with pytest.raises(SystemExit):
        p.parse_args(["--backend", "threads"])
    text = p.format_help()
    assert "frozen epochs (default 3)" in text and "--verify, --no-verify" in text
    assert "--head" not in text


def test_resolve_layers_defaults_file_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("epochs: 5\nhead: 7\nbackend: dask\n")
    values, given = resolve(OPTS, {"epochs": 9, "clean": None}, str(f))
    assert values == {"epochs": 9, "clean": True, "verify": False, "strict": False,
                      "backend": "dask", "head": 7}
    assert given == {"epochs", "head", "backend"}
    f.write_text(json.dumps({"epochs": 0}))
    with pytest.raises(InputError, match=f"^{f}: epochs: must be an integer >= 1, got 0$"):
        resolve(OPTS, {}, str(f))
    with pytest.raises(InputError, match=r"^--epochs: must be an integer >= 1, got 0 \(epochs"):
        resolve(OPTS, {"epochs": 0})
    f.write_text("epoch: 2\n")
    with pytest.raises(InputError, match="unknown key 'epoch'; allowed: epochs, clean"):
        read_keys(f, OPTS)


@pytest.mark.parametrize("config", [bconfig.BuildConfig, tconfig.FitConfig])
def test_every_default_passes_its_own_rule(config):
    for o in options_of(config):
        assert o.check(o.default, "default") == (
            list(o.default) if isinstance(o.default, list) else o.default), o.name
        assert o.help, o.name


def _dests(parser: argparse.ArgumentParser, command: str) -> set[str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest for a in sub.choices[command]._actions}


def test_parsers_hold_a_flag_for_each_declared_option():
    build = {n for n, o in bconfig.OPTIONS.items() if o.flag is not None}
    assert build <= _dests(build_cli(), "build")
    assert {o.name for o in bconfig.SCAN_OPTIONS} <= _dests(build_cli(), "scan")
    fit = set(tconfig.FLAG_NAMES)
    assert fit <= _dests(train_cli(), "fit") and "build_dir" not in fit
    assert {"lr_factor", "head_units", "dropout"}.isdisjoint(fit)  # config keys only


def test_defaults_live_once():
    assert bconfig.BuildConfig().split == split.DEFAULT_FRACTIONS
    assert scan.DEFAULT_THRESHOLD == bconfig.BuildConfig().threshold == 4
    assert bconfig.BuildConfig().outlier_min == scan.DEFAULT_OUTLIER_MIN


def test_the_threshold_rule_is_stated_once(tmp_path):
    """Flag, config file, the scan subcommand and the library: one rule, one wording."""
    tail = "threshold: must be an integer in 0..63, got 64"
    messages = []
    with pytest.raises(InputError) as e:
        bconfig.load_build_config(build_cli().parse_args(
            ["build", "in.npz", "--out", "o", "--threshold", "64"]))
    messages.append(str(e.value))
    (tmp_path / "c.yaml").write_text("threshold: 64\n")
    with pytest.raises(InputError) as e:
        bconfig.load_build_config(build_cli().parse_args(
            ["build", "in.npz", "--out", "o", "--config", str(tmp_path / "c.yaml")]))
    messages.append(str(e.value))
    with pytest.raises(InputError) as e:
        bconfig.check_flags(build_cli().parse_args(
            ["scan", "in.npz", "--out", "o", "--threshold", "64"]), bconfig.SCAN_OPTIONS)
    messages.append(str(e.value))
    with pytest.raises(InputError) as e:
        scan.find_groups(np.zeros(3, np.uint64), 64)
    messages.append(str(e.value))
    messages = [m.removesuffix(" (threshold=64)") for m in messages]  # a flag's echo
    assert all(m.endswith(tail) for m in messages), messages
    assert messages[0].startswith("--threshold") and messages[1].startswith(str(tmp_path))


def test_fit_options_import_no_tensorflow():
    """fit --help and the checks before TensorFlow loads stay fast."""
    code = ("import sys, frozenaug.trainer.cli as c; c.build_parser().parse_args(['fit', 'b', "
            "'--out', 'r']); bad = {'tensorflow', 'keras', 'h5py'} & set(sys.modules); "
            "print(sorted(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
