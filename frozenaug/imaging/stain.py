"""H&E stain arithmetic shared by the augmentation (builder.ops.StainJitter) and the distortion
suite (trainer/assess/distort.py), in numpy alone so that importing it costs nothing.

Colour deconvolution (Ruifrok & Johnston 2001): a pixel's optical density per channel,
``-ln((I + 1) / 256)``, is a sum of the stains' densities, each a fixed RGB vector times the
stain's concentration; inverting the 3x3 matrix of stain vectors gives the concentrations.
"""

from __future__ import annotations

import numpy as np

# Ruifrok & Johnston's H&E-DAB stain vectors (rows: optical density of each stain in R, G, B),
# the matrix scikit-image's rgb2hed uses.
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)
OD_LUT = -np.log((np.arange(256, dtype=np.float32) + 1.0) / 256.0)  # grey level -> OD
MAX_OD = float(np.log(256.0))  # the OD of grey level 0: capping at it keeps 256*exp(-od)-1 >= 0


def stain_matrices(scale: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image n, the affine map of optical density ``od @ a[n] + b[n]`` that multiplies each
    H, E, D stain concentration by ``scale[n, k]`` and adds ``shift[n, k]``.

    RGB -> optical density ``-ln((I + 1) / 256)`` -> stains (Ruifrok matrix) -> jitter ->
    back is affine in OD, so one (3x3, 1x3) pair per image does it (no skimage needed); a
    pixel without stain (white background) stays white under scaling.
    """
    scale, shift = np.asarray(scale, np.float64), np.asarray(shift, np.float64)
    a = HED_FROM_RGB[None] * scale[:, None, :] @ RGB_FROM_HED
    return a.astype(np.float32), (shift @ RGB_FROM_HED)[:, None, :].astype(np.float32)


def apply_stain(images: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) images through their per-image OD maps (stain_matrices)."""
    n = len(images)
    od = OD_LUT[images.reshape(n, -1, 3)]
    out = np.exp(-(od @ a + b)) * 256.0 - 1.0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(images.shape)
