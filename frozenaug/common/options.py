"""A command's options declared once: type, default, range, help and flag of each.

A config dataclass declares every field with ``option(default, help, ...)``; from that one
declaration come the argparse flags (``add_flags``), the config-file reader (``read_keys``), the
checks with their one-line messages (``Option.check``) and the layering defaults <- file <-
flags (``resolve``). Nothing heavy is imported here: ``fit --help`` and the checks that run
before TensorFlow is imported use it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from frozenaug.common.errors import InputError, brief
from frozenaug.common.safeio import CONFIG_MAX_BYTES, read_text
from frozenaug.common.safeparse import parse_config_text

_KINDS = (bool, int, float, str)


@dataclasses.dataclass(frozen=True)
class Option:
    """One option. ``kind`` is bool, int, float or str (from the default when not given);
    ``parse`` replaces the kind check for a structured value (a size, a list), raising
    InputError, TypeError or ValueError; ``choices`` may be a function, called on first use,
    for a list that lives in a heavy module."""

    name: str
    default: Any
    help: str
    kind: type = str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo itself is outside the range
    hi_open: bool = False
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] = ()
    none_ok: bool = False
    empty_ok: bool = False  # a str that may be "" (required elsewhere, e.g. a positional)
    parse: Callable[[Any], Any] | None = None
    flag: str | None = ""  # "" -> --name-with-dashes; None -> a config key only
    negate: str = ""  # a store_true flag (e.g. --no-clean) that sets this bool to False
    switch: bool = False  # --x / --no-x (argparse.BooleanOptionalAction)
    positional: bool = False
    required: bool = False  # the flag must be given
    default_text: str | None = None  # how --help shows the default ("" hides it)

    @property
    def flag_name(self) -> str:
        return self.negate or self.flag or "--" + self.name.replace("_", "-")

    def rule(self) -> str:
        """What a valid value is, in words: the tail of every message about this option."""
        if self.kind is bool:
            return "true or false"
        if self.choices:
            return "one of " + ", ".join(self.allowed())
        if self.kind is str:
            return "a string" if self.empty_ok else "a non-empty string"
        noun = "an integer" if self.kind is int else "a number"
        if self.lo is not None and self.hi is not None:
            if self.kind is int:
                return f"{noun} in {self.lo}..{self.hi}"
            return (f"{noun} in {'(' if self.lo_open else '['}{self.lo:g}, "
                    f"{self.hi:g}{')' if self.hi_open else ']'}")
        if self.lo == 0 and self.lo_open and self.kind is float:
            return "a positive number"
        if self.lo is not None:
            return f"{noun} {'>' if self.lo_open else '>='} {self.lo:g}"
        return noun if self.kind is int else f"a finite {noun[2:]}"

    def allowed(self) -> tuple[str, ...]:
        return self.choices() if callable(self.choices) else self.choices

    def check(self, value: Any, where: str) -> Any:
        """``value`` brought to the option's type, or InputError naming ``where`` (a flag or a
        file), the rule and the option."""
        if value is None and self.none_ok:
            return None
        # A file names the key; a flag names itself, then the key with the value as given.
        flag = where.startswith("--")
        label = where if flag else f"{where}: {self.name}"
        key = f" ({self.name}={brief(value)})" if flag else ""
        if self.parse is not None:
            try:
                return self.parse(value)
            except (InputError, TypeError, ValueError) as e:
                raise InputError(f"{label}: {e}{key}") from None
        v = "" if self.empty_ok and value == "" else _typed(self.kind, value)
        if v is None or not self._in_range(v):
            raise InputError(f"{label}: must be {self.rule()}, got {brief(value)}{key}")
        return v

    def _in_range(self, v: Any) -> bool:
        if self.choices:
            return v in self.allowed()
        if self.kind in (bool, str):
            return True
        if not math.isfinite(v):
            return False
        lo_ok = self.lo is None or (v > self.lo if self.lo_open else v >= self.lo)
        hi_ok = self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)
        return lo_ok and hi_ok


def _typed(kind: type, v: Any) -> Any:
    """``v`` as ``kind``, or None: no bool for a number, no float for an integer, no text."""
    if kind is bool:
        return v if isinstance(v, bool) else None
    if isinstance(v, bool):
        return None
    if kind is int:
        return int(v) if isinstance(v, numbers.Integral) else None
    if kind is float:
        return float(v) if isinstance(v, numbers.Real) else None
    return v if isinstance(v, str) and v else None



def option(default: Any, help: str, *, factory: bool = False, **rules: Any) -> Any:
    """A dataclass field declared as an option (see Option). ``factory``: a mutable default
    (a list), copied for each instance."""
    kind = rules.pop("kind", None) or (type(default) if type(default) in _KINDS else str)
    spec = dict(default=default, help=help, kind=kind, **rules)
    if factory:
        return dataclasses.field(default_factory=lambda: list(default), metadata={"option": spec})
    return dataclasses.field(default=default, metadata={"option": spec})


def field_of(o: Option) -> Any:
    """A dataclass field for an Option declared by the module that owns its default (the
    algorithm, e.g. the scan's threshold), so that module need not import the config."""
    spec = {f.name: getattr(o, f.name) for f in dataclasses.fields(Option) if f.name != "name"}
    return dataclasses.field(default=o.default, metadata={"option": spec})


def options_of(cls: type) -> tuple[Option, ...]:
    """The Option of every field of a dataclass declared with ``option``, in field order."""
    return tuple(Option(name=f.name, **f.metadata["option"]) for f in dataclasses.fields(cls))


def _flag_default(o: Option) -> str:
    if o.default_text is not None:
        return o.default_text
    if o.kind is bool:
        return "on" if o.default else ""
    if o.default is None:
        return ""
    if isinstance(o.default, (list, tuple)):
        return ",".join(map(str, o.default))
    return str(o.default)


def add_flags(parser: argparse.ArgumentParser, options: Iterable[Option]) -> None:
    """One argparse argument per option with a flag. Every default is None ("not given"), so
    that a config file's value is overridden only by a flag that was given."""
    for o in options:
        if o.flag is None:
            continue
        shown = _flag_default(o)
        text = f"{o.help} (default {shown})" if shown else o.help
        if o.positional:
            parser.add_argument(o.name, help=text)
        elif o.negate:
            parser.add_argument(o.negate, dest=o.name, action="store_const", const=False,
                                default=None, help=o.help)
        elif o.kind is bool:
            action = argparse.BooleanOptionalAction if o.switch else "store_true"
            parser.add_argument(o.flag_name, dest=o.name, action=action, default=None, help=text)
        else:
            static = o.choices if o.choices and not callable(o.choices) else None
            kind = o.kind if o.parse is None and o.kind in (int, float) else str
            parser.add_argument(o.flag_name, dest=o.name, type=kind, choices=static,
                                default=None, required=o.required, help=text)


def read_mapping_file(path: str | Path) -> dict[str, Any]:
    """A JSON or YAML config file as a dict, ``-`` in keys read as ``_``."""
    path = Path(path)
    try:
        text = read_text(path, CONFIG_MAX_BYTES, "config file")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: unreadable config, cannot read it ({e})") from None
    try:
        raw = parse_config_text(text, path.suffix)
    except (ValueError, yaml.YAMLError) as e:
        raise InputError(f"{path}: unreadable config, not valid JSON/YAML ({e})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InputError(f"{path}: a config file must be a mapping of option: value")
    return {str(key).replace("-", "_"): value for key, value in raw.items()}


def check_keys(data: dict[str, Any], options: Iterable[Option], where: str) -> dict[str, Any]:
    """Every value of ``data`` checked by its option; an unknown key is an InputError."""
    by_name = {o.name: o for o in options}
    unknown = sorted(set(data) - set(by_name))
    if unknown:
        raise InputError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(map(repr, unknown))}; allowed: {', '.join(by_name)}")
    return {k: by_name[k].check(v, where) for k, v in data.items()}


def read_keys(path: str | Path, options: Iterable[Option]) -> dict[str, Any]:
    """A config file's values, each checked by its option."""
    return check_keys(read_mapping_file(path), options, str(path))


def resolve(options: Iterable[Option], flags: dict[str, Any], config_file: str | None = None,
            base: dict[str, Any] | None = None) -> tuple[dict[str, Any], set[str]]:
    """``base`` (default: the options' defaults) <- the config file <- the flags that were given
    (not None). Returns the checked values and the names given by the file or a flag."""
    options = tuple(options)
    values = dict(base) if base is not None else {
        o.name: list(o.default) if isinstance(o.default, list) else o.default for o in options}
    given: set[str] = set()
    if config_file:
        from_file = read_keys(config_file, options)
        values.update(from_file)
        given.update(from_file)
    for o in options:
        v = flags.get(o.name)
        if v is not None:
            values[o.name] = o.check(v, o.flag_name)
            given.add(o.name)
    return values, given
