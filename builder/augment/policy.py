"""Augmentation policies: presets, policy files, hashing, and deterministic per-sample use.

A policy file is albumentations' own serialisation (``A.to_dict``: ``__version__`` and
``transform``), so ``A.load`` still reads it once ``augment.ops`` is imported, plus two keys of
ours: ``name`` and ``mix`` (the batch stage, :class:`frozenaug.imaging.mixing.MixConfig`, or null)::

    name: heavy
    mix: {mixup_alpha: 0.4, cutmix_alpha: 1.0, prob: 0.5, cutmix_share: 0.5}
    __version__: 2.0.8
    transform: {__class_fullname__: Compose, p: 1.0, transforms: [...]}

Determinism: :class:`Augmenter` gives every transform of its pipeline one shared
``random.Random`` and one ``np.random.Generator``, and before each image resets both from that
image's seed. The output then depends on (policy, image, seed) only, not on what the process
augmented before. Resetting two generators costs ~10 us; ``Compose.set_random_seed`` would build
a new Generator per transform per image (~120 us for the light preset, ~40 % of its time).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import warnings
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np
import yaml

from frozenaug.builder.augment import ops  # registers RandAugment and AugMix for A.from_dict
from frozenaug.builder.augment.families import (
    DROPPABLE,
    FAMILY_NAMES,
    drop_family,
    transform_families,
)
from frozenaug.common.atomic import write_bytes
from frozenaug.common.errors import InputError, brief
from frozenaug.common.safeio import CONFIG_MAX_BYTES, read_text
from frozenaug.common.safeparse import parse_config_text
from frozenaug.imaging.mixing import MixConfig

PRESETS = ("none", "light", "heavy", "heavy-mix")
POLICY_SUFFIXES = (".json", ".yaml", ".yml")
_FILE_KEYS = {"name", "mix", "__version__", "transform"}
_REFLECT = cv2.BORDER_REFLECT_101  # microscope backgrounds continue past the edge


@dataclass
class Policy:
    """A per-sample pipeline plus an optional batch stage (MixUp/CutMix)."""

    name: str
    transform: A.BaseCompose
    mix: MixConfig | None
    source: str = field(default="", compare=False)  # file or "preset", for error messages

    def to_dict(self) -> dict[str, Any]:
        """The policy file's content, JSON-normal (lists, not tuples; enums as values)."""
        d = {"name": self.name, "mix": None if self.mix is None else self.mix.to_dict()}
        d.update(A.to_dict(self.transform))
        return _json_normal(d)

    @property
    def hash(self) -> str:
        """sha256 hex of the canonical JSON of :meth:`to_dict`: equal in every process."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def _json_default(o: Any) -> Any:
    if isinstance(o, Enum):
        return o.value
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"cannot serialise {type(o).__name__} in a policy")


def _json_normal(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=_json_default))


def preset(name: str) -> Policy:
    """A fresh copy of a built-in policy."""
    if name == "none":
        return Policy("none", A.Compose([]), None, "preset")
    if name == "light":
        return Policy("light", A.Compose([
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomRotate90(p=0.5),
            A.Affine(scale=(0.9, 1.1), rotate=(-15, 15), translate_percent=(-0.05, 0.05),
                     border_mode=_REFLECT, p=0.5),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.5),
        ]), None, "preset")
    if name == "heavy":
        # No MixUp/CutMix: at the 80-epoch recipe the frozen mix stage cost compound accuracy
        # on val in every fit seed measured (README, "MixUp/CutMix left out").
        return Policy("heavy", _heavy_transform(), None, "preset")
    if name == "heavy-mix":  # the heavy preset until 2026-12-07, as the original project had it
        return Policy("heavy-mix", _heavy_transform(),
                      MixConfig(mixup_alpha=0.4, cutmix_alpha=1.0, prob=0.5, cutmix_share=0.5),
                      "preset")
    raise InputError(f"--policy {name}: no such preset; presets are {', '.join(PRESETS)}")


def _heavy_transform() -> A.Compose:
    # The original project's recipe widened to every distortion family of
    # augment.families (leave-one-family-out drops one). Probabilities < 1, AugMix width 2,
    # cheaper variants (approximate elastic, StainJitter rather than HEStain's ~13 ms) and
    # lower OneOf weights for the slowest (WebP, Defocus, ISONoise: ~1 ms each) keep it
    # near 1 ms/image on 96x96 while most images still get several strong changes.
    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomRotate90(p=0.5),
        A.Affine(scale=(0.75, 1.25), rotate=(-45, 45), translate_percent=(-0.1, 0.1),
                 shear=(-10, 10), border_mode=_REFLECT, p=0.6),
        A.OneOf([
            A.Perspective(scale=(0.03, 0.08), border_mode=_REFLECT, p=1.0),
            A.GridDistortion(num_steps=5, distort_limit=0.3, border_mode=_REFLECT, p=1.0),
            A.ElasticTransform(alpha=30, sigma=5, approximate=True, same_dxdy=True,
                               border_mode=_REFLECT, p=0.5),  # OneOf weight: 2x the cost
        ], p=0.25),
        A.OneOf([
            ops.RandAugment(n=2, magnitude=0.6, p=1.0),
            ops.AugMix(severity=3, width=2, depth=-1, alpha=1.0, p=1.0),
        ], p=0.7),
        A.OneOf([
            A.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=1.0),
            A.RandomBrightnessContrast(brightness_limit=0.3, contrast_limit=0.3, p=1.0),
            A.RandomGamma(gamma_limit=(70, 150), p=1.0),
        ], p=0.5),
        ops.StainJitter(scale=0.25, shift=0.1, p=0.5),
        A.ChannelShuffle(p=0.2),
        A.ToGray(p=0.1),
        A.OneOf([
            A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.1, 0.25),
                            hole_width_range=(0.1, 0.25), fill=0, p=1.0),
            # a 4x4 grid, not a unit size in pixels: the same at 28 px as at 96
            A.GridDropout(ratio=0.3, holes_number_xy=(4, 4), p=1.0),
        ], p=0.3),
        A.OneOf([
            A.GaussianBlur(blur_limit=(3, 7), sigma_limit=(0.5, 2.5), p=1.0),
            A.MotionBlur(blur_limit=(3, 9), p=1.0),
            A.Defocus(radius=(1, 3), alias_blur=(0.1, 0.2), p=0.5),  # ~0.9 ms
        ], p=0.25),
        A.OneOf([
            A.ImageCompression(compression_type="jpeg", quality_range=(10, 60), p=1.0),
            A.ImageCompression(compression_type="webp", quality_range=(5, 50), p=0.5),
            A.Downscale(scale_range=(0.35, 0.8), p=1.0),
        ], p=0.25),
        A.OneOf([
            A.GaussNoise(std_range=(0.03, 0.15), p=1.0),
            A.ISONoise(color_shift=(0.01, 0.05), intensity=(0.1, 0.5), p=0.5),
            A.MultiplicativeNoise(multiplier=(0.8, 1.2), per_channel=True,
                                  elementwise=True, p=0.5),
            A.SaltAndPepper(amount=(0.005, 0.04), p=1.0),
        ], p=0.25),
    ])


def _load_file(path: Path) -> Any:
    if path.suffix.lower() not in POLICY_SUFFIXES:
        raise InputError(f"{path}: a policy file must end in {', '.join(POLICY_SUFFIXES)}")
    try:
        return parse_config_text(read_text(path, CONFIG_MAX_BYTES, "policy file"), path.suffix)
    except (OSError, ValueError, yaml.YAMLError) as e:  # ValueError: JSON, UTF-8, the limits
        raise InputError(f"{path}: unreadable policy ({type(e).__name__}: {e})") from None


def _invalid_args(t: Any) -> list[str]:
    """Arguments albumentations ignored with only a warning (misspelt names), recursively."""
    bad = [f"{type(t).__name__}.{a}" for a in getattr(t, "invalid_args", None) or []]
    for child in getattr(t, "transforms", None) or []:
        bad += _invalid_args(child)
    return bad


def policy_from_dict(d: Any, source: str, default_name: str = "custom") -> Policy:
    """Build a policy from a file's content; every problem is an InputError naming ``source``."""
    if not isinstance(d, dict) or not isinstance(d.get("transform"), dict):
        raise InputError(f"{source}: not a policy (needs a mapping with a 'transform' mapping)")
    unknown = sorted(set(d) - _FILE_KEYS)
    if unknown:
        raise InputError(f"{source}: unknown keys {unknown}; a policy has {sorted(_FILE_KEYS)}")
    try:
        mix = None if d.get("mix") is None else MixConfig.from_dict(d["mix"])
    except (TypeError, ValueError) as e:
        raise InputError(f"{source}: bad mix ({e})") from None
    try:
        # Held back until the transform is known to be valid, so that a refused policy gives
        # one line; misspelt arguments are dropped here and reported below as an error.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.filterwarnings("ignore", message=r".*are not valid for transform")
            transform = A.from_dict({"transform": d["transform"]})
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    except KeyError as e:
        raise InputError(f"{source}: unknown transform or missing key {e} "
                         "(custom transforms are builder.ops.RandAugment, AugMix, StainJitter)"
                         ) from None
    except (TypeError, ValueError, AttributeError) as e:
        raise InputError(f"{source}: invalid transform ({type(e).__name__}: {e})") from None
    bad = _invalid_args(transform)
    if bad:
        raise InputError(f"{source}: unknown transform arguments {bad}")
    if isinstance(transform, A.BasicTransform):
        transform = A.Compose([transform])
    if not isinstance(transform, A.BaseCompose):
        raise InputError(f"{source}: 'transform' is not an albumentations transform")
    name = d.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise InputError(f"{source}: name must be a non-empty string, got {brief(name)}")
    return Policy(name, transform, mix, source)


def load_policy(name_or_path: str, drop_family: str | None = None) -> Policy:
    """A preset by name, or a policy file (.json, .yaml, .yml); with ``drop_family``, that
    policy without the family's transforms (:func:`without_family`).

    Raises:
        InputError: no such preset or file, the file is unparseable or invalid, or no such
            family.
    """
    if name_or_path in PRESETS:
        policy = preset(name_or_path)
    else:
        path = Path(name_or_path)
        if not path.exists():  # a FIFO exists: _load_file refuses it by name
            raise InputError(f"{name_or_path}: no such policy file; presets are "
                             f"{', '.join(PRESETS)}")
        policy = policy_from_dict(_load_file(path), str(path), default_name=path.stem)
    return policy if drop_family is None else without_family(policy, drop_family)


def policy_families(policy: Policy) -> set[str]:
    """The distortion families (augment.families.FAMILY_NAMES) the policy's transforms cover."""
    return transform_families(A.to_dict(policy.transform)["transform"])


def without_family(policy: Policy, family: str) -> Policy:
    """``policy`` with every transform of ``family`` removed, at any depth (a OneOf left
    empty goes too; RandAugment/AugMix lose that family's ops), named ``<name>-no-<family>``;
    the mix stage is kept unless ``family`` is ``mix``. For leave-one-family-out: train on it,
    test on that family.

    Raises:
        InputError: ``family`` is not one of FAMILY_NAMES.
    """
    if family not in DROPPABLE:
        raise InputError(f"--drop-family {family}: no such family; families are "
                         f"{', '.join(FAMILY_NAMES)} (or mix, the MixUp/CutMix stage)")
    d = policy.to_dict()
    if family == "mix":
        d["mix"] = None
    else:
        d["transform"] = drop_family(d["transform"], family)
    d["name"] = f"{policy.name}-no-{family}"
    return policy_from_dict(d, policy.source or "preset", d["name"])


def save_policy(policy: Policy, path: str | Path) -> None:
    """Write a policy file atomically; JSON or YAML by the suffix."""
    path = Path(path)
    d = policy.to_dict()
    if path.suffix.lower() == ".json":
        text = json.dumps(d, indent=2) + "\n"
    elif path.suffix.lower() in (".yaml", ".yml"):
        text = (f"# frozenaug augmentation policy '{policy.name}'. Copy and edit, then pass\n"
                "# --policy FILE. 'transform' is albumentations' own serialisation\n"
                "# (A.to_dict); 'mix' is the MixUp/CutMix batch stage, or null.\n"
                + yaml.safe_dump(d, sort_keys=False, default_flow_style=None, width=100))
    else:
        raise InputError(f"{path}: a policy file must end in {', '.join(POLICY_SUFFIXES)}")
    write_bytes(path, text.encode())


def main(argv: list[str] | None = None) -> int:
    """``python -m augment.policy write-presets policies/``: regenerate the preset files."""
    p = argparse.ArgumentParser(prog="python -m frozenaug.builder.augment.policy")
    p.add_argument("command", choices=["write-presets"])
    p.add_argument("folder")
    args = p.parse_args(argv)
    for name in PRESETS:
        save_policy(preset(name), Path(args.folder) / f"{name}.yaml")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
