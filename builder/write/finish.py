"""``build --finish POLICY:K``: the recipe's finishing build, written inside the build.

The recommended recipe trains on heavy augmentation, then finishes with a few epochs of a light
build of the same images and split (README, "Heavy, then light"). One ``build`` writes both, so
that ``fit BUILD`` can run the whole recipe: the finishing build is an ordinary build in
``OUT/finish`` (fit, verify, inspect and preview read it like any other) with the same input,
seed, cleaning and split, its own policy and K, and, with ``--drop-family F``, without F too.

It reuses the parent's scan and split (no second scan; its ``split.json`` is the parent's, byte
for byte, which is what ``fit`` compares) and is written before the parent's manifest. That
manifest records the finishing build's policy, K and manifest sha256, so it appears only once
both builds are complete, and a killed build resumes both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from frozenaug import format as fmt
from frozenaug.builder.augment.policy import Policy, load_policy
from frozenaug.builder.config import NO_FINISH, BuildConfig, finish_policy
from frozenaug.common.errors import InputError


def finish_config(cfg: BuildConfig) -> BuildConfig | None:
    """The finishing build's config (None without one): the parent's, but for its folder,
    policy and K, and no finishing build of its own."""
    fp = finish_policy(cfg.finish)
    if fp is None:
        return None
    policy, k = fp
    return replace(cfg, out=str(Path(cfg.out) / fmt.FINISH_DIR), policy=policy, epochs=k,
                   finish=NO_FINISH)


def check_finish_policy(cfg: BuildConfig) -> Policy | None:
    """Load the finishing policy now, so a bad one fails before anything is written."""
    sub = finish_config(cfg)
    if sub is None:
        return None
    try:
        return load_policy(sub.policy, sub.drop_family)
    except InputError as e:
        raise InputError(f"--finish {cfg.finish}: {e}") from None


def write_finish(cfg: BuildConfig, root: Path, clean: tuple[dict, dict | None],
                 fingerprint: str, run_build: Callable[..., Any]
                 ) -> tuple[dict[str, Any], Any] | None:
    """Build (or resume, or find up to date) the finishing build of ``cfg`` inside ``root``
    with ``run_build`` (the parent's builder, one level down), from the parent's split and
    scan summary ``clean``; return its manifest record and ``run_build``'s result.

    Raises:
        InputError: the input changed since the parent read it (another fingerprint).
    """
    sub = finish_config(cfg)
    if sub is None:
        return None
    splits, summary = clean
    result = run_build(sub, clean=(splits, summary, (root / fmt.SPLIT_NAME).read_bytes()))
    folder = root / fmt.FINISH_DIR
    m = fmt.load_manifest(folder)
    if m.raw.get("input", {}).get("fingerprint") != fingerprint:
        raise InputError(f"{cfg.input}: changed while it was being built (the finishing build "
                         "read other images); build again")
    return {"dir": fmt.FINISH_DIR, "policy": sub.policy, "epochs": sub.epochs,
            "manifest_sha256": fmt.sha256_file(folder / fmt.MANIFEST_NAME)}, result
