"""Distortion families of augmentation transforms, and a policy with one family left out.

The six families are the distortion suite's (trainer/assess/distort.py): geometric, blur,
compression, colour (stain included), noise, occlusion. Leave-one-family-out trains with a
policy that lacks family F and tests on distortions of family F: how the model copes with
damage nobody anticipated.

Transforms are classified by their albumentations class name. RandAugment and AugMix mix
families: each of their ops has one (``augment.ops.OP_FAMILIES``: geometric and colour ops,
sharpness as blur), so dropping a family drops those ops and keeps the rest; a RandAugment or
AugMix left with no op that does anything is removed. A class not listed here has no family
and is always kept (``unclassified`` names them). The MixUp/CutMix batch stage is no family.

Everything works on the serialised form (``A.to_dict``), so the result is a plain policy file.
"""

from __future__ import annotations

from typing import Any

from frozenaug.builder.augment.ops import OP_FAMILIES

FAMILY_NAMES = ("geometric", "blur", "compression", "colour", "noise", "occlusion")
# What --drop-family removes: a family, or "mix", the MixUp/CutMix batch stage (a build for
# ``fit --mix fresh``, which draws them anew each epoch).
DROPPABLE = (*FAMILY_NAMES, "mix")

_BY_FAMILY = {
    "geometric": (
        "HorizontalFlip", "VerticalFlip", "RandomRotate90", "Transpose", "D4",
        "SquareSymmetry", "Affine", "ShiftScaleRotate", "Rotate", "SafeRotate", "Perspective",
        "ElasticTransform", "GridDistortion", "OpticalDistortion", "PiecewiseAffine",
        "ThinPlateSpline", "GridElasticDeform", "RandomScale", "RandomGridShuffle",
    ),
    "blur": (
        "Blur", "GaussianBlur", "MotionBlur", "MedianBlur", "GlassBlur", "AdvancedBlur",
        "Defocus", "ZoomBlur", "Sharpen", "UnsharpMask", "RingingOvershoot",
    ),
    "compression": ("ImageCompression", "Downscale", "Superpixels"),
    "colour": (
        "ColorJitter", "RandomBrightnessContrast", "RandomGamma", "HueSaturationValue",
        "ChannelShuffle", "ToGray", "ToSepia", "RGBShift", "CLAHE", "Equalize", "Solarize",
        "Posterize",
        "FancyPCA", "RandomToneCurve", "PlanckianJitter", "HEStain", "AutoContrast",
        "builder.ops.StainJitter",
        "InvertImg", "ChannelDropout", "Illumination", "PlasmaBrightnessContrast",
        "PlasmaShadow", "RandomShadow", "ChromaticAberration", "Emboss",
    ),
    "noise": (
        "GaussNoise", "ISONoise", "MultiplicativeNoise", "ShotNoise", "SaltAndPepper",
        "AdditiveNoise", "PixelDropout", "Spatter",
    ),
    "occlusion": (
        "CoarseDropout", "GridDropout", "XYMasking", "Erasing", "ConstrainedCoarseDropout",
        "RandomGravel", "RandomRain", "RandomSunFlare", "RandomFog", "RandomSnow",
    ),
}
# albumentations class name (as in a policy file's __class_fullname__) -> family
TRANSFORM_FAMILIES: dict[str, str] = {
    name: family for family, names in _BY_FAMILY.items() for name in names}
MULTI_FAMILY = ("builder.ops.RandAugment", "builder.ops.AugMix")


def _class(node: dict[str, Any]) -> str:
    return str(node.get("__class_fullname__", ""))


def transform_families(node: dict[str, Any]) -> set[str]:
    """The families a serialised transform (and everything inside it) applies."""
    if "transforms" in node:
        return set().union(*(transform_families(c) for c in node["transforms"]))
    if _class(node) in MULTI_FAMILY:
        return {OP_FAMILIES[o] for o in node.get("ops", ()) if OP_FAMILIES.get(o)}
    family = TRANSFORM_FAMILIES.get(_class(node))
    return {family} if family else set()


def unclassified(node: dict[str, Any]) -> list[str]:
    """Class names inside a serialised transform that belong to no family."""
    if "transforms" in node:
        return [n for c in node["transforms"] for n in unclassified(c)]
    known = _class(node) in TRANSFORM_FAMILIES or _class(node) in MULTI_FAMILY
    return [] if known else [_class(node)]


def drop_family(node: dict[str, Any], family: str, root: bool = True) -> dict[str, Any] | None:
    """A copy of a serialised transform without family ``family``; None when nothing is left
    of it (the root Compose is kept, possibly empty)."""
    node = dict(node)
    if "transforms" in node:
        kept = [c for c in (drop_family(c, family, False) for c in node["transforms"])
                if c is not None]
        if not kept and not root:
            return None  # an empty OneOf/SomeOf/Sequential would fail or do nothing
        node["transforms"] = kept
        if isinstance(node.get("n"), int):  # SomeOf: cannot pick more than remain
            node["n"] = min(node["n"], len(kept))
        return node
    if _class(node) in MULTI_FAMILY:
        ops = [o for o in node.get("ops", ()) if OP_FAMILIES.get(o) != family]
        if not any(OP_FAMILIES.get(o) for o in ops):
            return None  # identity alone, or nothing
        node["ops"] = ops
        return node
    return None if TRANSFORM_FAMILIES.get(_class(node)) == family else node
