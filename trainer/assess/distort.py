"""Strong, label-preserving distortions for robustness evaluation, at severities 1..5.

The builder's augmentation teaches invariances; these test them, deliberately harsher and
independent of any policy (a hidden "distorted test set" is the original project's yardstick).
The six families are the kinds of damage real microscopes, scanners and pipelines do; their
names are shared with the builder's augmentation families (``augment.families.FAMILY_NAMES``), so
"train without family F, test on F" (leave-one-family-out) means the same F on both sides.
One family at a time is the easy test; compound.py composes them (with heldout.py's families)
per image, the robustness headline.

Each family is a function ``(images, severity, rng) -> images`` over uint8 ``(N, H, W, 3)``
batches, built on OpenCV and numpy. Every random draw (which kind of distortion an image gets,
where, how) comes from ``numpy.random.default_rng([seed, crc32(family)])`` and only its
*strength* depends on the severity: a (seed, family, severity) triple always gives the same
images, and a higher severity is a stronger version of the same damage on every image. Pixel
sizes (blur radii, line widths, displacements) are given at 96 px and scale with the side.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import cv2
import numpy as np

from frozenaug.common.errors import brief
from frozenaug.imaging.stain import MAX_OD, OD_LUT, stain_matrices

MAX_SEVERITY = 5
CHUNK = 256  # images per family call: bounds the float32 working memory (~30 MB at 96 px)


def _scale(x: np.ndarray) -> float:
    return max(x.shape[1:3]) / 96.0


# --- geometric ----------------------------------------------------------------------------


def _geometric(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """Every image: rotation up to 12*s degrees, scale 1 +- 0.06*s, shear up to 4*s degrees,
    shift up to 4*s % of the side, random horizontal/vertical flips; then one warp per image:
    a perspective tilt (corners moved up to 3*s % of the side), an elastic warp (a smooth
    random displacement field, amplitude up to 1.2*s % of the side) or a grid distortion (5x5
    cells stretched/squeezed by up to 8*s % along each axis). Borders reflected."""
    n, h, w = x.shape[:3]
    u = rng.uniform(-1, 1, (n, 5))
    flips = rng.random((n, 2)) < 0.5
    kind = rng.integers(0, 3, n)
    corners = rng.uniform(-1, 1, (n, 4, 2))
    field = rng.uniform(-1, 1, (n, 2, 4, 4)).astype(np.float32)
    steps = rng.uniform(-1, 1, (n, 2, 5))
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty_like(x)
    for i in range(n):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), 12 * s * u[i, 0], 1 + 0.06 * s * u[i, 1])
        shear = np.tan(np.radians(4 * s * u[i, 2]))
        m[0, 1] += shear
        m[0, 2] += 0.04 * s * u[i, 3] * w - shear * h / 2
        m[1, 2] += 0.04 * s * u[i, 4] * h
        hom = np.vstack([m, [0, 0, 1]])
        if kind[i] == 0:  # perspective: the affine map, then the corners jittered
            dst = src + corners[i].astype(np.float32) * 0.03 * s * np.float32([w, h])
            hom = cv2.getPerspectiveTransform(src, dst) @ hom
        img = cv2.warpPerspective(x[i], hom, (w, h), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REFLECT_101)
        if kind[i] == 1:  # elastic: a coarse random field upsampled smoothly
            amp = 0.012 * s * max(h, w)
            dx = cv2.resize(field[i, 0], (w, h), interpolation=cv2.INTER_CUBIC) * amp
            dy = cv2.resize(field[i, 1], (w, h), interpolation=cv2.INTER_CUBIC) * amp
            img = cv2.remap(img, xx + dx, yy + dy, cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT_101)
        elif kind[i] == 2:  # grid: piecewise-linear, monotone stretch of each axis
            mx = _grid_axis(w, steps[i, 0], 0.08 * s)
            my = _grid_axis(h, steps[i, 1], 0.08 * s)
            img = cv2.remap(img, np.broadcast_to(mx, (h, w)).astype(np.float32),
                            np.broadcast_to(my[:, None], (h, w)).astype(np.float32),
                            cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        if flips[i, 0]:
            img = img[:, ::-1]
        if flips[i, 1]:
            img = img[::-1]
        out[i] = img
    return out


def _grid_axis(size: int, u: np.ndarray, limit: float) -> np.ndarray:
    """Source coordinate for every output pixel along one axis: len(u) cells, each of width
    (1 + limit*u) times its share, rescaled to span the axis."""
    widths = 1 + limit * u
    knots_out = np.concatenate([[0], np.cumsum(widths)]) / widths.sum() * (size - 1)
    knots_src = np.linspace(0, size - 1, len(u) + 1)
    return np.interp(np.arange(size), knots_out, knots_src)


# --- blur ---------------------------------------------------------------------------------


def _motion_kernel(length: float, angle: float) -> np.ndarray:
    k = int(np.ceil(length)) | 1
    kernel = np.zeros((k, k), np.float32)
    c = (k - 1) / 2
    dx, dy = np.cos(angle) * (length - 1) / 2, np.sin(angle) * (length - 1) / 2
    cv2.line(kernel, (int(round(16 * (c - dx))), int(round(16 * (c - dy)))),
             (int(round(16 * (c + dx))), int(round(16 * (c + dy)))), 1.0, 1, cv2.LINE_AA, 4)
    return kernel / kernel.sum()


def _disk_kernel(radius: float) -> np.ndarray:
    r = int(np.ceil(radius))
    kernel = np.zeros((2 * r + 1, 2 * r + 1), np.float32)
    cv2.circle(kernel, (r * 16, r * 16), int(round(radius * 16)), 1.0, -1, cv2.LINE_AA, 4)
    return kernel / kernel.sum()


def _blur(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """One kind per image: Gaussian blur (sigma 0.3*s..0.5*s px), motion blur (a line kernel
    of length 1 + 2.4*s px at a random angle) or defocus (a disk kernel of radius
    0.5 + 0.75*s px); sizes at 96 px."""
    n = len(x)
    k = _scale(x)
    kind = rng.integers(0, 3, n)
    u = rng.random(n)
    angle = rng.uniform(0, np.pi, n)
    out = np.empty_like(x)
    for i in range(n):
        if kind[i] == 0:
            out[i] = cv2.GaussianBlur(x[i], (0, 0), (0.3 + 0.2 * u[i]) * s * k,
                                      borderType=cv2.BORDER_REFLECT_101)
            continue
        if kind[i] == 1:
            kernel = _motion_kernel((1 + 2.4 * s * (0.8 + 0.2 * u[i])) * k, angle[i])
        else:
            kernel = _disk_kernel((0.5 + 0.75 * s * (0.8 + 0.2 * u[i])) * k)
        out[i] = cv2.filter2D(x[i], -1, kernel, borderType=cv2.BORDER_REFLECT_101)
    return out


# --- compression --------------------------------------------------------------------------

JPEG_QUALITY = (50, 30, 18, 10, 5)
WEBP_QUALITY = (40, 20, 10, 5, 1)
DOWNSCALE = (0.7, 0.55, 0.45, 0.36, 0.28)


def _codec(img: np.ndarray, ext: str, flag: int, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(img[..., ::-1]), [flag, quality])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {ext}")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


def _compression(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """One kind per image: a JPEG round trip at quality 50/30/18/10/5, a WebP round trip at
    quality 40/20/10/5/1, or resolution loss: area-downscale to 70/55/45/36/28 % of the side
    and back up, by nearest neighbour (pixelation) or bilinear (soft) at random."""
    n, h, w = x.shape[:3]
    kind = rng.integers(0, 3, n)
    nearest = rng.random(n) < 0.5
    out = np.empty_like(x)
    small = (max(1, round(w * DOWNSCALE[s - 1])), max(1, round(h * DOWNSCALE[s - 1])))
    for i in range(n):
        if kind[i] == 0:
            out[i] = _codec(x[i], ".jpg", cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY[s - 1])
        elif kind[i] == 1:
            out[i] = _codec(x[i], ".webp", cv2.IMWRITE_WEBP_QUALITY, WEBP_QUALITY[s - 1])
        else:
            lo = cv2.resize(x[i], small, interpolation=cv2.INTER_AREA)
            out[i] = cv2.resize(lo, (w, h), interpolation=cv2.INTER_NEAREST if nearest[i]
                                else cv2.INTER_LINEAR)
    return out


# --- colour and stain ---------------------------------------------------------------------

_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_LUMA = np.tile(_YIQ[0], (3, 1))


def _colour_matrices(s: int, u: np.ndarray, shuffle: np.ndarray, perms: np.ndarray,
                     gray: np.ndarray) -> np.ndarray:
    """Per image, one 3x3 matrix acting on RGB rows (``rgb @ m``): hue rotation and
    saturation in YIQ, then a channel permutation and grayscale where drawn (all linear)."""
    n = len(u)
    theta = np.radians(15 * s * u[:, 0])
    sat = np.maximum(0.0, 1 + 0.15 * s * u[:, 1])
    chroma = np.zeros((n, 3, 3))
    chroma[:, 0, 0] = 1
    chroma[:, 1, 1] = chroma[:, 2, 2] = np.cos(theta) * sat
    chroma[:, 1, 2] = -np.sin(theta) * sat
    chroma[:, 2, 1] = np.sin(theta) * sat
    m = np.linalg.inv(_YIQ) @ chroma @ _YIQ  # column-vector form: rgb' = m @ rgb
    eye = np.eye(3)
    m = np.where(shuffle[:, None, None], eye[perms], eye) @ m
    m = np.where(gray[:, None, None], _LUMA @ m, m)
    return np.swapaxes(m, 1, 2).astype(np.float32)


def _colour(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """Every image: H&E stain change (each stain's optical density x(1 +- 0.08*s) and
    +- 0.04*s), hue rotation up to 15*s degrees, saturation x(1 +- 0.15*s), contrast
    x(1 +- 0.12*s), brightness +- 6*s % and gamma 1.12^(+-s); channel shuffle with probability
    0.08*s and grayscale with probability 0.06*s."""
    n, h, w = x.shape[:3]
    u = rng.uniform(-1, 1, (n, 11))
    shuffle = rng.random(n) < 0.08 * s
    perms = np.argsort(rng.random((n, 3)), axis=1)
    perms = np.where((perms == np.arange(3)).all(1)[:, None], [1, 2, 0], perms)  # a real swap
    gray = rng.random(n) < 0.06 * s
    a, b = stain_matrices(1 + 0.08 * s * u[:, 0:3], 0.04 * s * u[:, 3:6])
    m = np.swapaxes(_colour_matrices(s, u[:, 6:8], shuffle, perms, gray), 1, 2)  # m @ rgb
    # Per image in cv2 calls (4x faster than whole-batch numpy): stain first (it happens on
    # the slide) as an affine map of optical density, then the linear colour matrix applied
    # to I = 256 * exp(-od) - 1 in one affine transform, then the tone curve as a table.
    od_maps = np.concatenate([np.swapaxes(a, 1, 2), np.swapaxes(b, 1, 2)], axis=2)
    rgb_maps = np.concatenate([256.0 * m, -m.sum(axis=2, keepdims=True)], axis=2)
    contrast = np.maximum(0.1, 1 + 0.12 * s * u[:, 8])
    gamma = 1.12 ** (s * u[:, 10])
    levels = np.arange(256.0)
    out = np.empty_like(x)
    for i in range(n):
        od = cv2.transform(cv2.LUT(x[i], OD_LUT), od_maps[i])
        # od clipped to [0, ln 256]: the stained slide's I in 0..255, as the camera records it
        rgb = cv2.transform(cv2.exp(-np.clip(od, 0.0, MAX_OD)), rgb_maps[i].astype(np.float32))
        img = cv2.convertScaleAbs(cv2.max(rgb, 0.0))  # rounds, saturates at 255
        mean = sum(cv2.mean(img)[:3]) / 3  # contrast about the image mean
        t = (levels - mean) * contrast[i] + mean + 0.06 * s * 255 * u[i, 9]
        t = 255.0 * (np.clip(t, 0, 255) / 255.0) ** gamma[i]
        out[i] = cv2.LUT(img, np.clip(np.rint(t), 0, 255).astype(np.uint8))
    return out


# --- noise --------------------------------------------------------------------------------

GAUSS_STD = (0.04, 0.07, 0.10, 0.14, 0.18)  # fraction of 255
SHOT_PHOTONS = (80.0, 40.0, 20.0, 10.0, 5.0)  # photons at full white
SPECKLE_STD = (0.10, 0.16, 0.24, 0.33, 0.42)
SALT_PEPPER = (0.01, 0.02, 0.04, 0.07, 0.10)  # fraction of pixels


def _noise(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """One kind per image: additive Gaussian (std 4/7/10/14/18 % of full scale, per pixel and
    channel), shot noise (Poisson with 80/40/20/10/5 photons at white, drawn by its normal
    approximation lam + sqrt(lam)*z: numpy's exact Poisson costs 20x more), speckle
    (multiplicative Gaussian, std 0.10..0.42) or salt-and-pepper (1/2/4/7/10 % of pixels
    black or white)."""
    n = len(x)
    kind = rng.integers(0, 4, n)
    out = np.empty_like(x)
    lam = SHOT_PHOTONS[s - 1] / 255.0
    for k in range(4):
        idx = np.flatnonzero(kind == k)
        f = x[idx].astype(np.float32)
        if k == 3:
            v = rng.random((len(idx), *x.shape[1:3], 1), dtype=np.float32)
            frac = SALT_PEPPER[s - 1]
            f = np.where(v < frac / 2, 0.0, np.where(v > 1 - frac / 2, 255.0, f))
        else:
            z = rng.standard_normal(f.shape, dtype=np.float32)
            if k == 0:
                f += z * (255 * GAUSS_STD[s - 1])
            elif k == 1:  # photons ~ Poisson(lam * I); back in grey levels
                f += z * np.sqrt(f / lam)
            else:
                f *= 1 + z * SPECKLE_STD[s - 1]
        out[idx] = np.clip(np.rint(f), 0, 255)
    return out


# --- occlusion ----------------------------------------------------------------------------


def _occlusion(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """One kind per image: ``s`` cutout holes (each 12-22 % of the side, one random grey
    level), ``s`` scratches or hairs (lines across the image, 1-2 px wide, dark or random
    colour) or 4*s dust specks (dark discs of radius 1-3.5 px); sizes at 96 px."""
    n, h, w = x.shape[:3]
    k = _scale(x)
    kind = rng.integers(0, 3, n)
    # drawn for the strongest severity and cut to s (or 4*s): severity s+1 adds to severity s
    box = rng.random((n, MAX_SEVERITY, 4))
    level = rng.integers(0, 256, (n, MAX_SEVERITY))
    ends = rng.random((n, MAX_SEVERITY, 4)) * [w, h, w, h]
    colour = rng.integers(0, 256, (n, MAX_SEVERITY, 3))
    dark = rng.random((n, MAX_SEVERITY)) < 0.6
    width = rng.integers(1, 3, (n, MAX_SEVERITY))
    specks = rng.random((n, 4 * MAX_SEVERITY, 3))
    out = x.copy()
    for i in range(n):
        img = out[i]
        if kind[i] == 0:
            for j in range(s):
                hh = max(1, int(h * (0.12 + 0.1 * box[i, j, 0])))
                ww = max(1, int(w * (0.12 + 0.1 * box[i, j, 1])))
                y0, x0 = int(box[i, j, 2] * (h - hh + 1)), int(box[i, j, 3] * (w - ww + 1))
                img[y0 : y0 + hh, x0 : x0 + ww] = level[i, j]
        elif kind[i] == 1:
            for j in range(s):
                c = (20, 20, 20) if dark[i, j] else tuple(int(v) for v in colour[i, j])
                p = np.rint(ends[i, j] * 16).astype(int)
                cv2.line(img, (p[0], p[1]), (p[2], p[3]), c,
                         max(1, int(round(width[i, j] * k))), cv2.LINE_AA, 4)
        else:
            for j in range(4 * s):
                cx, cy, r = specks[i, j]
                cv2.circle(img, (int(cx * w * 16), int(cy * h * 16)),
                           int((1 + 2.5 * r) * k * 16), (25, 25, 25), -1, cv2.LINE_AA, 4)
    return out


FAMILIES: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "geometric": _geometric,
    "blur": _blur,
    "compression": _compression,
    "colour": _colour,
    "noise": _noise,
    "occlusion": _occlusion,
}


def distort(images: np.ndarray, family: str, severity: int, seed: int = 0) -> np.ndarray:
    """A distorted copy of uint8 ``(N, H, W, 3)`` images; deterministic in (seed, family,
    severity), with the same random choices at every severity."""
    if family not in FAMILIES:
        raise ValueError(f"unknown distortion {brief(family)}; known: {', '.join(FAMILIES)}")
    if not 1 <= severity <= MAX_SEVERITY:
        raise ValueError(f"severity must be 1..{MAX_SEVERITY}, got {severity}")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N,H,W,3) uint8, got {images.shape} {images.dtype}")
    # crc32, not the position in FAMILIES: adding a family leaves the others' images alone
    rng = np.random.default_rng([seed, zlib.crc32(family.encode())])
    out = np.empty_like(images)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # at 96 px OpenCV's thread start-up costs more than the work
    try:
        for start in range(0, len(images), CHUNK):
            out[start : start + CHUNK] = FAMILIES[family](images[start : start + CHUNK],
                                                          severity, rng)
    finally:
        cv2.setNumThreads(threads)
    return out
