"""Distortion families that no training preset has: held out by construction.

The six families of trainer/assess/distort.py share their names with the builder's
augmentation families, so a model trained with the heavy policy has seen every one of them.
Real slides are also damaged in ways no preset imitates; these two are the commonest in
brightfield microscopy, and both are *spatially varying*, which the global colour changes of
the presets and the per-image standardisation of ``--input-norm image`` cannot undo:

* ``illumination``: uneven illumination. A misaligned condenser or lamp, vignetting of the
  objective, tiles stitched from the edge of a field and uneven smear thickness make the
  brightness and colour drift across a crop. (Presets: only global brightness, contrast,
  gamma and colour changes; none of albumentations' ``Illumination``, ``RandomShadow``,
  ``PlasmaBrightnessContrast`` or ``Vignetting``-like transforms.)
* ``optics``: a cheap or misused objective: radial (barrel or pincushion) lens distortion,
  lateral chromatic aberration (colour fringes at the edges) and field curvature (the edges
  out of focus while the centre is sharp). (Presets: no ``OpticalDistortion`` or
  ``ChromaticAberration``; their grid and elastic warps resemble the radial distortion alone,
  the colour fringes and the blur that grows with radius are new.)

``TRAINING_EQUIVALENTS`` names the albumentations transforms that would teach these; the tests
check that no preset policy uses one, so the families stay held out if a preset changes.

Same contract as distort.py: ``(images, severity, rng) -> images`` over uint8 ``(N, H, W, 3)``,
every draw from ``rng``, only the strength depends on the severity; sizes at 96 px.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

# albumentations classes (policy-file names) that would make these families seen in training
TRAINING_EQUIVALENTS = {
    "illumination": ("Illumination", "RandomShadow", "PlasmaBrightnessContrast",
                     "PlasmaShadow", "RandomSunFlare"),
    "optics": ("OpticalDistortion", "ChromaticAberration"),
}


def _field(h: int, w: int, cells: np.ndarray) -> np.ndarray:
    """A smooth field over (h, w): a coarse grid of values upsampled bicubically."""
    return cv2.resize(cells.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)


def _illumination(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """Every image multiplied (as transmitted light is) by a smooth gain field: vignetting
    about an optical centre up to 30 % of the side off the image centre, falling to
    1 - 0.09*s at the farthest corner; a linear ramp in a random direction, 0.08*s from end to
    end; blotches (a 3x3 random grid, upsampled, +-0.04*s); and per channel a ramp of its own
    along the same direction, up to +-0.02*s (colour temperature drifting across the field)."""
    n, h, w = x.shape[:3]
    centre = rng.uniform(-0.3, 0.3, (n, 2))
    depth = rng.uniform(0.7, 1.0, n)
    angle = rng.uniform(0, 2 * np.pi, n)
    ramp = rng.uniform(0.6, 1.0, n)
    blotch = rng.uniform(-1, 1, (n, 3, 3))
    tint = rng.uniform(-1, 1, (n, 3))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = (xx + 0.5) / w - 0.5, (yy + 0.5) / h - 0.5  # -0.5..0.5 across the image
    out = np.empty_like(x)
    for i in range(n):
        r2 = (u - centre[i, 0]) ** 2 + (v - centre[i, 1]) ** 2
        vignette = 1 - 0.09 * s * depth[i] * r2 / r2.max()
        along = np.cos(angle[i]) * u + np.sin(angle[i]) * v
        along = along / max(float(np.abs(along).max()), 1e-6)  # -1..1 across the image
        drift = 0.04 * s * (ramp[i] * along + _field(h, w, blotch[i]))
        colour = 0.02 * s * tint[i] * along[..., None]  # one side warmer, the other cooler
        gain = vignette[..., None] * (1 + drift[..., None] + colour)
        out[i] = np.clip(np.rint(x[i] * gain), 0, 255)
    return out


def _optics(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """Every image through a poor objective, about an optical centre up to 20 % of the side
    off the image centre: radial distortion, barrel or pincushion, moving the farthest corner
    by 3*s..4*s % of the half-diagonal; lateral chromatic aberration, red and blue magnified by
    1 +- 0.005*s against green (opposite signs: a ~1.7 px fringe at the corners at s=5); and
    field curvature, a Gaussian blur of sigma 0.3*s px blended in with the squared radius."""
    n, h, w = x.shape[:3]
    k = max(h, w) / 96.0
    centre = rng.uniform(-0.2, 0.2, (n, 2)) * [w, h] + [(w - 1) / 2, (h - 1) / 2]
    k1 = rng.uniform(0.75, 1.0, n) * 0.04 * s * np.where(rng.random(n) < 0.5, -1, 1)
    ca = rng.uniform(0.5, 1.0, n) * 0.005 * s * np.where(rng.random(n) < 0.5, -1, 1)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty_like(x)
    for i in range(n):
        dx, dy = xx - centre[i, 0], yy - centre[i, 1]
        radius = np.sqrt(dx * dx + dy * dy)
        r2 = (radius / max(radius.max(), 1e-6)) ** 2  # 0 at the centre, 1 at the far corner
        img = np.empty_like(x[i])
        for c, mag in enumerate((1 + ca[i], 1.0, 1 - ca[i])):  # R, G, B
            scale = ((1 + k1[i] * r2) * mag).astype(np.float32)
            mx = (centre[i, 0] + dx * scale).astype(np.float32)
            my = (centre[i, 1] + dy * scale).astype(np.float32)
            img[..., c] = cv2.remap(np.ascontiguousarray(x[i][..., c]), mx, my,
                                    cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        soft = cv2.GaussianBlur(img, (0, 0), 0.3 * s * k, borderType=cv2.BORDER_REFLECT_101)
        blend = r2[..., None]
        out[i] = np.clip(np.rint(img * (1 - blend) + soft * blend), 0, 255)
    return out


HELD_OUT: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "illumination": _illumination,
    "optics": _optics,
}
