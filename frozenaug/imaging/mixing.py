"""The batch stage of a policy: MixUp and CutMix between samples of one shard.

It runs after the per-sample pipeline, on a shard's already shuffled images, and turns the hard
labels into soft ones. Each sample is mixed with probability ``prob`` with a partner drawn from
the same batch (never itself), always from the *unmixed* images, so the result does not depend
on the order in which samples are visited.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import cv2
import numpy as np

from frozenaug.common.errors import brief

MIX_ALPHA_RANGE = (0.01, 100.0)  # as builder.augment.knobs.ALPHA_RANGE (no builder import here)


@dataclass
class MixConfig:
    """MixUp/CutMix settings.

    Attributes:
        mixup_alpha: MixUp's lambda ~ Beta(alpha, alpha); > 0.
        cutmix_alpha: CutMix's lambda ~ Beta(alpha, alpha); > 0.
        prob: chance that a sample is mixed at all, in [0, 1].
        cutmix_share: chance that a mixed sample uses CutMix rather than MixUp, in [0, 1].
    """

    mixup_alpha: float = 0.4
    cutmix_alpha: float = 1.0
    prob: float = 0.5
    cutmix_share: float = 0.5

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"mix.{f.name} must be a number, got {brief(v)}")
            setattr(self, f.name, float(v))
        for name in ("mixup_alpha", "cutmix_alpha"):  # Beta(a, a) gives NaN as a nears 0
            if not MIX_ALPHA_RANGE[0] <= getattr(self, name) <= MIX_ALPHA_RANGE[1]:
                raise ValueError(f"mix.{name} must be in [{MIX_ALPHA_RANGE[0]:g}, "
                                 f"{MIX_ALPHA_RANGE[1]:g}], got {getattr(self, name)}")
        for name in ("prob", "cutmix_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"mix.{name} must be in [0, 1], got {getattr(self, name)}")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MixConfig:
        """Build from a policy file's ``mix`` mapping; unknown keys are an error (typos)."""
        if not isinstance(d, dict):
            raise ValueError(f"mix must be a mapping or null, got {type(d).__name__}")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            known = [f.name for f in fields(cls)]
            raise ValueError(f"mix has unknown keys {unknown}; known: {known}")
        return cls(**d)


def cutmix_box(h: int, w: int, lam: float, cy: float, cx: float) -> tuple[int, int, int, int]:
    """The box (y0, y1, x0, x1) of area ~(1 - lam) * h * w centred at (cy, cx) in [0, 1)^2,
    clipped to the image (so its real area may be smaller; the caller uses the real one)."""
    cut = math.sqrt(1.0 - lam)
    bh, bw = int(round(h * cut)), int(round(w * cut))
    y, x = int(cy * h), int(cx * w)
    return (max(y - bh // 2, 0), min(y - bh // 2 + bh, h),
            max(x - bw // 2, 0), min(x - bw // 2 + bw, w))


def mix_batch(images: np.ndarray, labels: np.ndarray, num_classes: int, cfg: MixConfig,
              seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Mix samples of one batch with MixUp or CutMix.

    Args:
        images: (n, H, W, C) uint8.
        labels: (n,) int class indices in [0, num_classes).
        num_classes: C of the soft labels.
        cfg: the policy's batch stage.
        seed: the only source of randomness; equal seeds give equal results.

    Returns:
        (mixed images, uint8 (n, H, W, C); soft labels, float32 (n, num_classes), rows sum to 1).
        For CutMix the label mass of the partner is exactly the pasted area's share.
    """
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be (n,H,W,C) uint8, got {images.shape} {images.dtype}")
    n, h, w = images.shape[:3]
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must be in [0, {num_classes}), got {labels.min()}..{labels.max()}")
    soft = np.zeros((n, num_classes), np.float64)
    soft[np.arange(n), labels] = 1.0
    out = images.copy()
    if n < 2 or cfg.prob <= 0:
        return out, soft.astype(np.float32)

    rng = np.random.Generator(np.random.PCG64(seed))
    # Draw every number for every sample up front: a fixed number of draws per sample keeps
    # each sample's outcome independent of the others' branches.
    mixed = rng.random(n) < cfg.prob
    partner = rng.integers(0, n - 1, size=n)
    partner += partner >= np.arange(n)  # skip self: uniform over the other n - 1
    use_cutmix = rng.random(n) < cfg.cutmix_share
    lam_mixup = rng.beta(cfg.mixup_alpha, cfg.mixup_alpha, size=n)
    lam_cutmix = rng.beta(cfg.cutmix_alpha, cfg.cutmix_alpha, size=n)
    centres = rng.random((n, 2))

    for i in np.flatnonzero(mixed):
        j = int(partner[i])
        if use_cutmix[i]:
            y0, y1, x0, x1 = cutmix_box(h, w, float(lam_cutmix[i]), *centres[i])
            out[i, y0:y1, x0:x1] = images[j, y0:y1, x0:x1]
            lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
        else:
            lam = float(lam_mixup[i])
            # one cv2 call (rounds and saturates to uint8): ~10x cheaper than numpy floats
            out[i] = cv2.addWeighted(images[i], lam, images[j], 1.0 - lam, 0.0)
        soft[i] *= lam
        soft[i, labels[j]] += 1.0 - lam
    return out, soft.astype(np.float32)
