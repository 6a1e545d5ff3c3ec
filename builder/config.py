"""The build's options, declared once: defaults <- config file (JSON/YAML) <- command-line flags.

Each field of ``BuildConfig`` is an ``option`` (common.options): its type, default, range and
help make the flags of ``build`` (and of ``scan`` and ``clean``, which share some), the keys a
config file may hold, and the checks, run before any work starts, so a misspelt key or an
out-of-range value fails in a second with a message naming the flag or file.
``BuildConfig.to_dict()`` is the part that determines the output; it goes into the manifest.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from typing import Any

from frozenaug import format as fmt
from frozenaug.builder.clean.options import OUTLIER_MIN, SPLIT, THRESHOLD
from frozenaug.common.errors import InputError, brief
from frozenaug.common.imageheaders import DEFAULT_MAX_IMAGE_PIXELS
from frozenaug.common.options import Option, field_of, option, options_of, resolve

BACKENDS = ("loky", "dask")
# Options that change how fast a build runs or where it goes, never what it writes.
# max_image_pixels only refuses an input, it never changes what is written; left out of the
# manifest, so builds from before it keep their key.
RUNTIME_ONLY = ("out", "jobs", "backend", "scheduler", "overwrite", "max_image_pixels")


def _size(v: Any) -> tuple[int, int]:
    from frozenaug.data.intake import parse_size

    if isinstance(v, (list, tuple)) and len(v) == 2:
        v = f"{v[0]}x{v[1]}"
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise InputError(f"must be N, 'HxW' or [H, W], got {brief(v)}")
    h, w = parse_size(str(v))
    return (int(h), int(w))


def _classes(v: Any) -> list[str]:
    from frozenaug.data.intake import parse_classes

    if isinstance(v, list) and v and all(isinstance(c, str) and c for c in v):
        return list(v)
    if not isinstance(v, str) or not v:
        raise InputError(f"must be a list of names, 'a,b,c' or a file, got {brief(v)}")
    return [str(c) for c in parse_classes(v)]


def _encoding(v: Any) -> str:
    return str(fmt.parse_encoding(v))  # canonical: "jpeg" is recorded as "jpeg:95"


def _droppable() -> tuple[str, ...]:
    from frozenaug.builder.augment.families import (
        DROPPABLE,  # imports the ops: only when a value is checked
    )

    return DROPPABLE


# What finish "auto" gives: the recipe's finishing build after the heavy preset (README,
# "Heavy, then light": 3 epochs of light after heavy gave back the clean accuracy heavy costs).
AUTO_FINISH = {"heavy": "light:3", "heavy-mix": "light:3"}
NO_FINISH = "none"


def _finish(v: Any) -> str:
    """auto, none, or POLICY:K (a preset or policy file, and its frozen epochs K)."""
    if not isinstance(v, str) or not v:
        raise InputError(f"must be auto, none or POLICY:K, got {brief(v)}")
    if v in ("auto", NO_FINISH):
        return v
    policy, sep, k = v.rpartition(":")
    if not sep or not policy or not k.isdigit() or not 1 <= int(k) <= 10_000:
        raise InputError(f"must be auto, none or POLICY:K with K in 1..10000 (e.g. light:3), "
                         f"got {brief(v)}")
    return f"{policy}:{int(k)}"


def finish_policy(finish: str) -> tuple[str, int] | None:
    """The finishing build's (policy, K) of a resolved ``finish`` value, or None."""
    if finish in ("auto", NO_FINISH):
        return None
    policy, _, k = finish.rpartition(":")
    return policy, int(k)


@dataclass
class BuildConfig:
    """Every option of ``frozenaug-build build``; see ``frozenaug-build build --help``.

    The upper limits refuse a huge value here rather than in an allocation or a C library
    later: seeds are packed as int64 (augment.policy), one task object is made per frozen epoch
    and shard, and each job is a process.
    """

    input: str = option("", "an AN2DL-style .npz, a MedMNIST .npz, or a folder per class",
                        positional=True, empty_ok=True)
    out: str = option("", "output directory", required=True, empty_ok=True)
    size: tuple[int, int] = option((96, 96), "image size, N or HxW", parse=_size,
                                   default_text="96")
    classes: list[str] | None = option(None, "class names, comma-separated or a file with one "
                                       "per line", parse=_classes, none_ok=True)
    strict: bool = option(False, "an unreadable image in a class folder is fatal (default: "
                          "skip, list)")
    medmnist_split: bool = option(False, "keep a MedMNIST file's official train/val/test split")
    max_image_pixels: int = option(
        DEFAULT_MAX_IMAGE_PIXELS, "the most pixels (width x height) one input image may have, "
        "checked in its header before it is decoded (a small file can claim a huge image); "
        "image files may be up to 8 bytes per such pixel plus 16 MiB", lo=1, hi=1 << 40,
        default_text=f"{DEFAULT_MAX_IMAGE_PIXELS:,}, 8192x8192")
    jobs: int | None = option(None, "worker processes", kind=int, lo=1, hi=1024, none_ok=True,
                              default_text="all cores")
    # 4: measured on the blood-cell set, see clean.scan (DEFAULT_THRESHOLD). With --no-clean
    # the manifest records null unless a value was given (load_build_config).
    threshold: int | None = field_of(THRESHOLD)
    outlier_min: int | None = field_of(OUTLIER_MIN)
    split: tuple[float, float, float] = field_of(SPLIT)
    seed: int = option(0, "random seed", lo=0, hi=2**63 - 1)
    epochs: int = option(10, "frozen epochs K", lo=1, hi=10_000)
    policy: str = option("heavy", "a preset (none, light, heavy, heavy-mix) or a policy file")
    drop_family: str | None = option(
        None, "leave one distortion family out of the policy (geometric, blur, compression, "
        "colour, noise, occlusion): train on it, then evaluate --distort shows how the model "
        "copes with that unseen family; or mix, the MixUp/CutMix stage, for fit --mix fresh",
        choices=_droppable, none_ok=True)
    finish: str = option(
        "auto", "also write a finishing build of the same split into OUT/finish, POLICY:K (e.g. "
        "light:3), which frozenaug-train fit reads in its last epochs; none; auto: light:3 "
        "after the heavy preset, else none", parse=_finish)
    shard_size: int = option(fmt.DEFAULT_SHARD_SIZE, "images per shard", lo=1, hi=2**31 - 1)
    encode: str = option(fmt.RAW, "how shards store images: raw, png, jpeg[:Q] (Q 1..100, "
                         "default 95), webp (lossless) or webp:Q (1..100); a lossy one applies "
                         "to train shards only, val/test stay exact", parse=_encoding)
    clean: bool = option(True, "skip the scan; keep every input image", negate="--no-clean")
    backend: str = option("loky", "joblib backend (dask needs --scheduler)", choices=BACKENDS)
    scheduler: str | None = option(None, "dask.distributed scheduler address", none_ok=True)
    overwrite: bool = option(False, "replace a build of another config in --out")

    def to_dict(self) -> dict[str, Any]:
        """The options that determine the output, JSON-ready (lists, not tuples)."""
        d = {k: v for k, v in asdict(self).items() if k not in RUNTIME_ONLY}
        if d["drop_family"] is None:  # recorded when used: a build from before it keeps its key
            del d["drop_family"]
        if d["finish"] == NO_FINISH:  # likewise
            del d["finish"]
        return json.loads(json.dumps(d))


OPTIONS: dict[str, Option] = {o.name: o for o in options_of(BuildConfig)}
# What the subcommands that share the build's options take.
SCAN_OPTIONS = tuple(OPTIONS[n] for n in ("input", "out", "size", "classes", "strict",
                                          "medmnist_split", "max_image_pixels", "jobs",
                                          "threshold", "outlier_min"))
CLEAN_OPTIONS = (*SCAN_OPTIONS, OPTIONS["split"], OPTIONS["seed"])


def check_flags(args: argparse.Namespace, options: tuple[Option, ...]) -> None:
    """The flags of ``scan`` and ``clean`` checked by the same rules as the build's."""
    for o in options:
        v = getattr(args, o.name, None)
        if v is not None and not o.positional:
            o.check(v, o.flag_name)


def load_build_config(args: argparse.Namespace) -> BuildConfig:
    """Defaults, overridden by ``--config FILE``, overridden by flags that were given.

    Raises:
        InputError: an unknown key, a value of the wrong type or out of range, or a
            contradictory combination (``--scheduler`` without ``--backend dask``).
    """
    values, given = resolve(OPTIONS.values(), vars(args), getattr(args, "config", None))
    cfg = BuildConfig(**values)
    for required in ("input", "out"):
        if not getattr(cfg, required):
            raise InputError(f"{OPTIONS[required].flag_name}: required (give it as a flag or "
                             "config key)")
    if cfg.backend == "dask" and not cfg.scheduler:
        raise InputError("--backend dask: needs --scheduler ADDRESS (a dask.distributed scheduler)")
    if cfg.scheduler and cfg.backend != "dask":
        raise InputError("--scheduler: only used with --backend dask")
    if cfg.finish == "auto":
        cfg.finish = AUTO_FINISH.get(cfg.policy, NO_FINISH)
    if not cfg.clean:  # no scan: the manifest records only scan parameters that were given
        cfg.threshold = cfg.threshold if "threshold" in given else None
        cfg.outlier_min = cfg.outlier_min if "outlier_min" in given else None
    return cfg
