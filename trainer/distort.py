"""Strong, label-preserving distortions for robustness evaluation, at severities 1..5.

The builder's augmentation teaches invariances; these test them, deliberately harsher and
independent of any policy (a hidden "distorted test set" is the original project's yardstick).
Each family is a function ``(images, severity, rng) -> images`` over uint8 ``(N, H, W, 3)``
batches, built on OpenCV and numpy; the per-image parameters come from
``numpy.random.default_rng([seed, family, severity])``, so a (seed, family, severity) triple
always gives the same images.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

MAX_SEVERITY = 5


def _geometric(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """Rotation up to 12*s degrees, scale 1 +- 0.06*s, shear up to 4*s degrees, shift up to
    4*s % of the side, and random horizontal/vertical flips; borders reflected."""
    n, h, w = x.shape[:3]
    out = np.empty_like(x)
    angle = rng.uniform(-12 * s, 12 * s, n)
    scale = rng.uniform(1 - 0.06 * s, 1 + 0.06 * s, n)
    shear = np.tan(np.radians(rng.uniform(-4 * s, 4 * s, n)))
    shift = rng.uniform(-0.04 * s, 0.04 * s, (n, 2)) * (w, h)
    flips = rng.random((n, 2)) < 0.5
    for i in range(n):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), float(angle[i]), float(scale[i]))
        m[0, 1] += shear[i]
        m[0, 2] += shift[i, 0] - shear[i] * h / 2
        m[1, 2] += shift[i, 1]
        img = cv2.warpAffine(x[i], m, (w, h), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT_101)
        if flips[i, 0]:
            img = img[:, ::-1]
        if flips[i, 1]:
            img = img[::-1]
        out[i] = img
    return out


def _colour(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """Hue shift up to 8*s degrees, saturation/contrast x(1 +- 0.12*s), brightness +- 8*s %,
    then channel shuffle (probability 0.15*s) and grayscale (probability 0.1*s)."""
    n = len(x)
    out = np.empty_like(x)
    hue = rng.uniform(-4 * s, 4 * s, n)  # OpenCV hue runs 0..180
    sat = rng.uniform(1 - 0.12 * s, 1 + 0.12 * s, n)
    contrast = rng.uniform(max(0.1, 1 - 0.12 * s), 1 + 0.12 * s, n)
    bright = rng.uniform(-0.08 * s, 0.08 * s, n) * 255
    shuffle = rng.random(n) < 0.15 * s
    perms = np.argsort(rng.random((n, 3)), axis=1)
    gray = rng.random(n) < 0.1 * s
    for i in range(n):
        hsv = cv2.cvtColor(x[i], cv2.COLOR_RGB2HSV).astype(np.float32)
        hsv[..., 0] = (hsv[..., 0] + hue[i]) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] * sat[i], 0, 255)
        img = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
        img = (img - img.mean()) * contrast[i] + img.mean() + bright[i]
        img = np.clip(img, 0, 255).astype(np.uint8)
        if shuffle[i]:
            img = img[..., perms[i]]
        if gray[i]:
            img = np.repeat(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=-1)
        out[i] = img
    return out


def _blur(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur, sigma 0.3*s..0.5*s at 96 px (scaled with the image side)."""
    side = max(x.shape[1:3]) / 96
    sigma = rng.uniform(0.3 * s, 0.5 * s, len(x)) * side
    return np.stack([cv2.GaussianBlur(img, (0, 0), float(max(sg, 0.1))) for img, sg in
                     zip(x, sigma, strict=True)])


def _noise(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise with standard deviation 6*s grey levels (per pixel and channel)."""
    return np.clip(x + rng.normal(0, 6 * s, x.shape), 0, 255).astype(np.uint8)


JPEG_QUALITY = (60, 40, 25, 15, 8)


def _jpeg(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """JPEG round trip at quality 60, 40, 25, 15, 8 for severities 1..5."""
    q = [int(cv2.IMWRITE_JPEG_QUALITY), JPEG_QUALITY[s - 1]]
    out = np.empty_like(x)
    for i, img in enumerate(x):
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[..., ::-1]), q)
        if not ok:
            raise RuntimeError("OpenCV could not encode a JPEG")
        out[i] = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return out


def _cutout(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """``s`` holes per image, each 12-20 % of the side, filled with one random grey level."""
    n, h, w = x.shape[:3]
    out = x.copy()
    for i in range(n):
        for _ in range(s):
            hh = max(1, int(h * rng.uniform(0.12, 0.2)))
            ww = max(1, int(w * rng.uniform(0.12, 0.2)))
            y0, x0 = rng.integers(0, h - hh + 1), rng.integers(0, w - ww + 1)
            out[i, y0 : y0 + hh, x0 : x0 + ww] = rng.integers(0, 256)
    return out


FAMILIES: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "geometric": _geometric,
    "colour": _colour,
    "blur": _blur,
    "noise": _noise,
    "jpeg": _jpeg,
    "cutout": _cutout,
}


def distort(images: np.ndarray, family: str, severity: int, seed: int = 0) -> np.ndarray:
    """A distorted copy of uint8 ``(N, H, W, 3)`` images; deterministic in (seed, family,
    severity)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown distortion {family!r}; known: {', '.join(FAMILIES)}")
    if not 1 <= severity <= MAX_SEVERITY:
        raise ValueError(f"severity must be 1..{MAX_SEVERITY}, got {severity}")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N,H,W,3) uint8, got {images.shape} {images.dtype}")
    rng = np.random.default_rng([seed, list(FAMILIES).index(family), severity])
    if not len(images):
        return images.copy()
    return FAMILIES[family](images, severity, rng)
