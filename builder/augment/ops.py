"""Augmentations albumentations 2.0.8 lacks: RandAugment, AugMix and a fast H&E stain jitter,
as serialisable transforms.

All are ``ImageOnlyTransform`` subclasses: they live in a policy file like any albumentations
transform (``__class_fullname__: builder.ops.RandAugment``) once this module is imported, and draw
all their randomness in ``get_params`` from the transform's own ``py_random`` /
``random_generator``, so seeding a Compose seeds them too.

The primitive ops take a uint8 RGB image and a signed strength ``level`` in [-1, 1] (the sign is
ignored by unsigned ops) and return a new uint8 image of the same shape. They are written with
cv2 lookup tables and integer shifts because at 96x96 the per-call overhead, not the pixels,
dominates: the fastest op is the one that makes the fewest Python and cv2 calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np

from frozenaug.builder.augment.knobs import (
    ALPHA_RANGE,
    MAX_AUGMIX_DEPTH,
    MAX_AUGMIX_WIDTH,
    MAX_OPS,
    MAX_RANDAUGMENT_N,
    MAX_STAIN_SHIFT,
    fill_value,
    float_in,
    int_in,
    probability,
)
from frozenaug.common.errors import brief
from frozenaug.imaging.stain import MAX_OD, OD_LUT, stain_matrices

Op = Callable[[np.ndarray, float, "int | None"], np.ndarray]

# Strength at level 1 (torchvision's RandAugment ranges, translate a little milder).
MAX_ROTATE_DEG = 30.0
MAX_SHEAR = 0.3
MAX_TRANSLATE = 0.3  # fraction of the side
MAX_ENHANCE = 0.9  # brightness/colour/contrast/sharpness factor 1 +- this
MAX_POSTERIZE_BITS = 4  # bits removed
_IDENTITY_LUT = np.arange(256, dtype=np.float32)
_SHARPEN_KERNEL = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13.0


def _lut(img: np.ndarray, table: np.ndarray) -> np.ndarray:
    return cv2.LUT(img, np.clip(np.rint(table), 0, 255).astype(np.uint8))


def _border(fill: int | None) -> dict[str, Any]:
    if fill is None:  # reflect: microscope backgrounds continue, no black wedges
        return {"borderMode": cv2.BORDER_REFLECT_101}
    return {"borderMode": cv2.BORDER_CONSTANT, "borderValue": (fill, fill, fill)}


def _warp(img: np.ndarray, m: np.ndarray, fill: int | None) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, **_border(fill))


def identity(img: np.ndarray, level: float, fill: int | None = None) -> np.ndarray:
    return img.copy()


def rotate(img: np.ndarray, level: float, fill: int | None = None) -> np.ndarray:
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), level * MAX_ROTATE_DEG, 1.0)
    return _warp(img, m, fill)


def _shear(img: np.ndarray, level: float, fill: int | None, axis: int) -> np.ndarray:
    h, w = img.shape[:2]
    s = level * MAX_SHEAR
    # shear about the centre so the cell stays in view
    if axis == 0:
        m = np.array([[1, s, -s * (h - 1) / 2], [0, 1, 0]], np.float64)
    else:
        m = np.array([[1, 0, 0], [s, 1, -s * (w - 1) / 2]], np.float64)
    return _warp(img, m, fill)


def shear_x(img: np.ndarray, level: float, fill: int | None = None) -> np.ndarray:
    return _shear(img, level, fill, 0)


def shear_y(img: np.ndarray, level: float, fill: int | None = None) -> np.ndarray:
    return _shear(img, level, fill, 1)


def _translate(img: np.ndarray, level: float, fill: int | None, axis: int) -> np.ndarray:
    h, w = img.shape[:2]
    d = int(round(level * MAX_TRANSLATE * (w if axis == 1 else h)))
    if d == 0:
        return img.copy()
    a = abs(d)
    # pad one side by |d| and crop the other: an integer shift without interpolation
    top, bottom, left, right = (
        (0, 0, a, 0) if d > 0 else (0, 0, 0, a)) if axis == 1 else (
        (a, 0, 0, 0) if d > 0 else (0, a, 0, 0))
    if fill is None:
        out = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_REFLECT_101)
    else:
        out = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT,
                                 value=(fill, fill, fill))
    out = out[bottom: bottom + h, right: right + w]
    return np.ascontiguousarray(out)


def translate_x(img: np.ndarray, level: float, fill: int | None = None) -> np.ndarray:
    return _translate(img, level, fill, 1)


def translate_y(img: np.ndarray, level: float, fill: int | None = None) -> np.ndarray:
    return _translate(img, level, fill, 0)


def brightness(img: np.ndarray, level: float, fill: int | None = None) -> np.ndarray:
    return _lut(img, _IDENTITY_LUT * (1.0 + level * MAX_ENHANCE))


def contrast(img: np.ndarray, level: float, fill: int | None = None) -> np.ndarray:
    mean = float(cv2.mean(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))[0])
    return _lut(img, mean + (_IDENTITY_LUT - mean) * (1.0 + level * MAX_ENHANCE))


def color(img: np.ndarray, level: float, fill: int | None = None) -> np.ndarray:
    f = 1.0 + level * MAX_ENHANCE
    gray = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    return cv2.addWeighted(img, f, gray, 1.0 - f, 0.0)


def sharpness(img: np.ndarray, level: float, fill: int | None = None) -> np.ndarray:
    f = 1.0 + level * MAX_ENHANCE
    blurred = cv2.filter2D(img, -1, _SHARPEN_KERNEL, borderType=cv2.BORDER_REFLECT_101)
    return cv2.addWeighted(img, f, blurred, 1.0 - f, 0.0)


def posterize(img: np.ndarray, level: float, fill: int | None = None) -> np.ndarray:
    bits = int(round(abs(level) * MAX_POSTERIZE_BITS))
    return img & np.uint8((0xFF << bits) & 0xFF)


def solarize(img: np.ndarray, level: float, fill: int | None = None) -> np.ndarray:
    threshold = 256.0 - 256.0 * abs(level)
    inverted = _IDENTITY_LUT >= threshold  # noqa: SIM300 (array on the left reads better)
    return _lut(img, np.where(inverted, 255.0 - _IDENTITY_LUT, _IDENTITY_LUT))


def autocontrast(img: np.ndarray, level: float, fill: int | None = None) -> np.ndarray:
    # cv2.minMaxLoc per channel: ~20x faster than numpy's strided min/max over (0, 1)
    lo, hi = np.array([cv2.minMaxLoc(c)[:2] for c in cv2.split(img)], np.float32).T
    span = hi - lo
    scale = np.where(span > 0, 255.0 / np.maximum(span, 1.0), 1.0)
    lo = np.where(span > 0, lo, 0.0)
    table = (_IDENTITY_LUT[:, None] - lo) * scale  # (256, 3): one table per channel
    return _lut(img, table.reshape(256, 1, 3))


def equalize(img: np.ndarray, level: float, fill: int | None = None) -> np.ndarray:
    return cv2.merge([cv2.equalizeHist(c) for c in cv2.split(img)])


OPS: dict[str, Op] = {
    "identity": identity,
    "rotate": rotate,
    "shear_x": shear_x,
    "shear_y": shear_y,
    "translate_x": translate_x,
    "translate_y": translate_y,
    "brightness": brightness,
    "color": color,
    "contrast": contrast,
    "sharpness": sharpness,
    "posterize": posterize,
    "solarize": solarize,
    "autocontrast": autocontrast,
    "equalize": equalize,
}
RANDAUGMENT_OPS = tuple(OPS)
# Each op's distortion family (augment.families.FAMILY_NAMES), for leave-one-family-out:
# dropping a family from a policy drops these ops from RandAugment/AugMix. sharpness is "blur"
# because it blends with a blurred copy (a negative level blurs); identity has no family.
OP_FAMILIES: dict[str, str | None] = {
    "identity": None,
    "rotate": "geometric",
    "shear_x": "geometric",
    "shear_y": "geometric",
    "translate_x": "geometric",
    "translate_y": "geometric",
    "brightness": "colour",
    "color": "colour",
    "contrast": "colour",
    "sharpness": "blur",
    "posterize": "colour",
    "solarize": "colour",
    "autocontrast": "colour",
    "equalize": "colour",
}
# AugMix leaves out the colour enhancers by default (Hendrycks et al.): they overlap common
# test-time corruptions, which AugMix is meant to generalise to rather than train on.
AUGMIX_OPS = ("autocontrast", "equalize", "posterize", "rotate", "solarize",
              "shear_x", "shear_y", "translate_x", "translate_y")


def _check_ops(cls: str, ops: Sequence[str]) -> list[str]:
    if isinstance(ops, str) or not isinstance(ops, Sequence) or len(ops) > MAX_OPS:
        raise ValueError(f"{cls}: ops must be a list of at most {MAX_OPS} names, got {brief(ops)}")
    ops = [str(o) for o in ops]
    unknown = sorted(set(ops) - set(OPS))
    if not ops or unknown:
        raise ValueError(
            f"{cls}: ops must be a non-empty list of {sorted(OPS)}; got {brief(unknown or ops)}")
    return ops


class _StableName:
    """Keeps the name these transforms had before the frozenaug namespace (``builder.ops.X``):
    albumentations keys its registry and policy files on it, and a build's policy_hash too."""

    @classmethod
    def get_class_fullname(cls) -> str:
        return f"builder.ops.{cls.__name__}"


class RandAugment(_StableName, A.ImageOnlyTransform):
    """RandAugment (Cubuk et al. 2020): ``n`` ops drawn uniformly (with replacement) from
    ``ops``, each at strength ``magnitude`` in [0, 1] with a random sign where it has one.

    Args:
        n: ops applied per image.
        magnitude: fraction of each op's maximum strength (1.0 = rotate 30 deg, shear 0.3,
            translate 30 %, enhance factor 1 +- 0.9, posterize to 4 bits, solarize all).
        ops: names from ``frozenaug.builder.augment.ops.OPS``.
        fill: border value for geometric ops, or None to reflect.
        p: probability of applying the transform.
    """

    def __init__(self, n: int = 2, magnitude: float = 0.5,
                 ops: Sequence[str] = RANDAUGMENT_OPS, fill: int | None = None,
                 p: float = 1.0) -> None:
        super().__init__(p=probability("RandAugment", p))
        self.n = int_in("RandAugment", "n", n, 0, MAX_RANDAUGMENT_N)
        self.magnitude = float_in("RandAugment", "magnitude", magnitude, 0.0, 1.0)
        self.ops = _check_ops("RandAugment", ops)
        self.fill = fill_value("RandAugment", fill)

    def get_params(self) -> dict[str, Any]:
        r = self.py_random
        chain = [(r.choice(self.ops), self.magnitude * (1.0 if r.random() < 0.5 else -1.0))
                 for _ in range(self.n)]
        return {"chain": chain}

    def apply(self, img: np.ndarray, chain: list[tuple[str, float]] = (),
              **params: Any) -> np.ndarray:
        for name, level in chain:
            img = OPS[name](img, level, self.fill)
        return img


class AugMix(_StableName, A.ImageOnlyTransform):
    """AugMix (Hendrycks et al. 2020): ``width`` chains of 1-3 (or ``depth``) random ops, mixed
    with Dirichlet(alpha) weights, then blended with the original by Beta(alpha, alpha).

    Args:
        severity: op strength 1..10; each op's level is drawn from U(0.1, severity) / 10.
        width: parallel chains.
        depth: ops per chain, or -1 for a random 1..3 per chain.
        alpha: Dirichlet and Beta concentration.
        ops: names from ``augment.ops.OPS`` (default: AugMix's geometric and tonal ops).
        fill: border value for geometric ops, or None to reflect.
        p: probability of applying the transform.
    """

    def __init__(self, severity: int = 3, width: int = 3, depth: int = -1, alpha: float = 1.0,
                 ops: Sequence[str] = AUGMIX_OPS, fill: int | None = None,
                 p: float = 1.0) -> None:
        super().__init__(p=probability("AugMix", p))
        self.severity = int_in("AugMix", "severity", severity, 1, 10)
        self.width = int_in("AugMix", "width", width, 1, MAX_AUGMIX_WIDTH)
        self.depth = int_in("AugMix", "depth", depth, 1, MAX_AUGMIX_DEPTH, also=(-1,))
        self.alpha = float_in("AugMix", "alpha", alpha, *ALPHA_RANGE)
        self.ops = _check_ops("AugMix", ops)
        self.fill = fill_value("AugMix", fill)

    def get_params(self) -> dict[str, Any]:
        r = self.py_random
        chains = []
        for _ in range(self.width):
            d = self.depth if self.depth > 0 else r.randint(1, 3)
            # level ~ U(0.1, severity) / 10 as in the AugMix paper's code, random sign
            chains.append([(r.choice(self.ops), r.uniform(0.1, self.severity) / 10.0
                            * (1.0 if r.random() < 0.5 else -1.0)) for _ in range(d)])
        g = self.random_generator
        weights = g.dirichlet([self.alpha] * self.width).tolist()
        return {"chains": chains, "weights": weights, "mix": float(g.beta(self.alpha, self.alpha))}

    def apply(self, img: np.ndarray, chains: list[list[tuple[str, float]]] = (),
              weights: Sequence[float] = (), mix: float = 0.0, **params: Any) -> np.ndarray:
        acc = np.zeros(img.shape, np.float32)
        for chain, w in zip(chains, weights, strict=True):
            out = img
            for name, level in chain:
                out = OPS[name](out, level, self.fill)
            # acc += w * out, in one cv2 call (float32 accumulate)
            cv2.scaleAdd(out.astype(np.float32), w * mix, acc, dst=acc)
        cv2.scaleAdd(img.astype(np.float32), 1.0 - mix, acc, dst=acc)
        return np.clip(np.rint(acc), 0, 255).astype(np.uint8)


# --- H&E stain --------------------------------------------------------------------------

class StainJitter(_StableName, A.ImageOnlyTransform):
    """H&E stain variation (Tellez et al. 2018's HED jitter): RGB to the haematoxylin, eosin
    and DAB stain concentrations by colour deconvolution (Ruifrok matrix), each concentration
    multiplied by U(1 - scale, 1 + scale) and shifted by U(-shift, shift) optical density,
    back to RGB. ~40 us at 96x96, where albumentations' HEStain takes ~13 ms.

    Args:
        scale: multiplicative jitter of each stain, in [0, 1).
        shift: additive jitter of each stain's optical density (natural log units), >= 0.
        p: probability of applying the transform.
    """

    def __init__(self, scale: float = 0.2, shift: float = 0.1, p: float = 1.0) -> None:
        super().__init__(p=probability("StainJitter", p))
        self.scale = float_in("StainJitter", "scale", scale, 0.0, 1.0, hi_open=True)
        self.shift = float_in("StainJitter", "shift", shift, 0.0, MAX_STAIN_SHIFT)

    def get_params(self) -> dict[str, Any]:
        g = self.random_generator
        return {"alpha": g.uniform(1 - self.scale, 1 + self.scale, 3).tolist(),
                "beta": g.uniform(-self.shift, self.shift, 3).tolist()}

    def apply(self, img: np.ndarray, alpha: Sequence[float] = (1.0, 1.0, 1.0),
              beta: Sequence[float] = (0.0, 0.0, 0.0), **params: Any) -> np.ndarray:
        # imaging.stain.apply_stain in cv2 calls (3x faster on one image): OD by lookup, the
        # affine OD map, capped at ln 256 so that 256 * exp(-od) - 1 >= 0 before the cast
        a, b = stain_matrices(np.array([alpha]), np.array([beta]))
        od = cv2.transform(cv2.LUT(img, OD_LUT), np.hstack([a[0].T, b[0].T]))
        # (numpy's minimum: cv2.min with a float scalar would clip the first channel only)
        return cv2.convertScaleAbs(cv2.exp(-np.minimum(od, MAX_OD)), alpha=256.0, beta=-1.0)
