"""The build's options in one dataclass: defaults <- config file (JSON/YAML) <- command-line flags.

Every value is checked here, before any work starts, so a misspelt key or an out-of-range value
fails in a second with a message naming the flag or key. ``BuildConfig.to_dict()`` is the part
that determines the output; it goes verbatim into the manifest.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from builder import format as fmt
from builder.errors import InputError

BACKENDS = ("loky", "dask")
# Options that change how fast a build runs or where it goes, never what it writes.
RUNTIME_ONLY = ("out", "jobs", "backend", "scheduler", "overwrite")


@dataclass
class BuildConfig:
    """Every option of ``frozenaug-build build``; see ``frozenaug-build build --help``."""

    input: str = ""
    out: str = ""
    size: tuple[int, int] = (96, 96)
    classes: list[str] | None = None
    strict: bool = False
    medmnist_split: bool = False
    jobs: int | None = None
    threshold: int | None = None  # None: builder.scan.DEFAULT_THRESHOLD
    outlier_min: int | None = None  # None: builder.scan's default
    split: tuple[float, float, float] = (0.64, 0.16, 0.2)
    seed: int = 0
    epochs: int = 3
    policy: str = "heavy"
    drop_family: str | None = None  # leave-one-family-out: builder.families.FAMILY_NAMES
    shard_size: int = fmt.DEFAULT_SHARD_SIZE
    clean: bool = True
    backend: str = "loky"
    scheduler: str | None = None
    overwrite: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The options that determine the output, JSON-ready (lists, not tuples)."""
        d = {k: v for k, v in asdict(self).items() if k not in RUNTIME_ONLY}
        if d["drop_family"] is None:  # recorded when used: a build from before it keeps its key
            del d["drop_family"]
        return json.loads(json.dumps(d))


ALLOWED_KEYS = tuple(f.name for f in fields(BuildConfig))

# Fields given by an argparse flag of the same dest; clean's flag is --no-clean, its negation.
_FLAG_FIELDS = tuple(name for name in ALLOWED_KEYS if name != "clean")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def read_mapping_file(path: str | Path) -> dict[str, Any]:
    """A JSON or YAML config file as a dict, ``-`` in keys read as ``_``; shared by the build
    and fit configs, which check the keys themselves."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: unreadable config, cannot read it ({e})") from None
    try:
        raw = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise InputError(f"{path}: unreadable config, not valid JSON/YAML ({e})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InputError(f"{path}: a config file must be a mapping of option: value")
    return {str(key).replace("-", "_"): value for key, value in raw.items()}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a JSON or YAML build config into a dict of known keys (hyphens allowed in keys)."""
    out = read_mapping_file(path)
    for name in out:
        if name not in ALLOWED_KEYS:
            raise InputError(
                f"{path}: unknown key {name!r}; allowed keys: {', '.join(ALLOWED_KEYS)}"
            )
    return out


# Upper limits, so that a huge value is refused here rather than by an allocation or a
# C library later: seeds are packed as int64 (builder.policy), one task object is made per
# frozen epoch and shard, and each job is a process.
INT_LIMITS = {"seed": 2**63 - 1, "epochs": 10_000, "shard_size": 2**31 - 1, "jobs": 1024,
              "outlier_min": 2**31 - 1}


def _int(where: str, v: Any, lo: int, none_ok: bool = False, hi: int | None = None
         ) -> int | None:
    if v is None and none_ok:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        extra = " or null" if none_ok else ""
        limit = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
        raise InputError(f"{where}: must be an integer {limit}{extra}, got {v!r}")
    return v


def _bool(where: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise InputError(f"{where}: must be true or false, got {v!r}")
    return v


def _str(where: str, v: Any, none_ok: bool = False) -> str | None:
    if v is None and none_ok:
        return None
    if not isinstance(v, str) or not v:
        raise InputError(f"{where}: must be a non-empty string, got {v!r}")
    return v


def _parsed(where: str, parse: Any, text: str) -> Any:
    """Run one of the intake/split parsers and make its complaint name the flag or key."""
    try:
        return parse(text)
    except (InputError, TypeError, ValueError) as e:
        raise InputError(f"{where}: {e}") from None


def _normalise(name: str, v: Any, where: str) -> Any:
    """Check one value and bring it to the dataclass's type."""
    if name in ("input", "out", "policy"):
        return _str(where, v)
    if name == "scheduler":
        return _str(where, v, none_ok=True)
    if name == "drop_family":
        from builder.families import DROPPABLE

        if v is not None and v not in DROPPABLE:
            raise InputError(f"{where}: must be one of {', '.join(DROPPABLE)}, got {v!r}")
        return v
    if name in ("strict", "medmnist_split", "clean", "overwrite"):
        return _bool(where, v)
    if name in ("epochs", "shard_size"):
        return _int(where, v, 1, hi=INT_LIMITS[name])
    if name == "jobs":
        return _int(where, v, 1, none_ok=True, hi=INT_LIMITS[name])
    if name == "seed":
        return _int(where, v, 0, hi=INT_LIMITS[name])
    if name == "threshold":
        v = _int(where, v, 0, none_ok=True)
        if v is not None and v > 63:
            raise InputError(f"{where}: must be <= 63 (the hashes have 64 bits), got {v}")
        return v
    if name == "outlier_min":
        return _int(where, v, 2, none_ok=True, hi=INT_LIMITS[name])
    if name == "backend":
        if v not in BACKENDS:
            raise InputError(f"{where}: must be one of {', '.join(BACKENDS)}, got {v!r}")
        return v
    if name == "size":
        from builder.intake import parse_size

        if isinstance(v, (list, tuple)) and len(v) == 2:
            v = f"{v[0]}x{v[1]}"
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise InputError(f"{where}: must be N, 'HxW' or [H, W], got {v!r}")
        h, w = _parsed(where, parse_size, str(v))
        return (int(h), int(w))
    if name == "classes":
        from builder.intake import parse_classes

        if v is None:
            return None
        if isinstance(v, list) and v and all(isinstance(c, str) and c for c in v):
            return list(v)
        if not isinstance(v, str) or not v:
            raise InputError(f"{where}: must be a list of names, 'a,b,c' or a file, got {v!r}")
        return [str(c) for c in _parsed(where, parse_classes, v)]
    if name == "split":
        from builder.split import parse_fractions

        if isinstance(v, (list, tuple)):
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                raise InputError(f"{where}: must be three fractions, got {v!r}")
            v = ",".join(repr(float(x)) for x in v)
        if not isinstance(v, str):
            raise InputError(f"{where}: must be 'train,val,test' fractions, got {v!r}")
        return tuple(float(x) for x in _parsed(where, parse_fractions, v))
    raise AssertionError(f"no check for config field {name}")  # every field is handled above


def load_build_config(args: argparse.Namespace) -> BuildConfig:
    """Dataclass defaults, overridden by ``--config FILE``, overridden by flags that were given.

    Raises:
        InputError: an unknown key, a value of the wrong type or out of range, or a
            contradictory combination (``--scheduler`` without ``--backend dask``).
    """
    values: dict[str, Any] = {}
    config_path = getattr(args, "config", None)
    if config_path:
        for name, v in read_config_file(config_path).items():
            values[name] = _normalise(name, v, f"{config_path}: key {name!r}")
    for name in _FLAG_FIELDS:
        v = getattr(args, name, None)
        if v is not None:
            values[name] = _normalise(name, v, _flag(name))
    if getattr(args, "no_clean", None):
        values["clean"] = False
    cfg = BuildConfig(**values)
    for required in ("input", "out"):
        if not getattr(cfg, required):
            raise InputError(f"{_flag(required)}: required (give it as a flag or config key)")
    if cfg.backend == "dask" and not cfg.scheduler:
        raise InputError("--backend dask: needs --scheduler ADDRESS (a dask.distributed scheduler)")
    if cfg.scheduler and cfg.backend != "dask":
        raise InputError("--scheduler: only used with --backend dask")
    if cfg.clean:
        # Record the scan's actual parameters, not None, so the manifest says what was used.
        from builder import scan

        if cfg.threshold is None:
            cfg.threshold = int(scan.DEFAULT_THRESHOLD)
        if cfg.outlier_min is None:
            cfg.outlier_min = int(scan.DEFAULT_OUTLIER_MIN)
    return cfg
