"""A policy applied: every sample's pipeline seeded by its own seed (``sample_seed``), the batch
stage by the shard's (``batch_seed``), so the output depends on the seeds alone."""

from __future__ import annotations

import copy
import hashlib
import random
from typing import Any

import cv2
import numpy as np

from frozenaug.builder.augment.policy import Policy
from frozenaug.common.errors import InputError
from frozenaug.imaging.mixing import mix_batch

PCG_INC = 0xDA3E39CB94B95BDB0A5F1F8C6B7B8A1D | 1  # any odd constant: PCG64's stream


class Augmenter:
    """Applies a policy's per-sample pipeline deterministically per seed, and its batch stage.

    Makes its own copy of the pipeline, so several Augmenters may share a Policy. Creating one
    sets OpenCV to one thread: at 96x96 cv2's thread pool costs more than it saves, and the build
    runs one process per core anyway.
    """

    def __init__(self, policy: Policy) -> None:
        cv2.setNumThreads(1)
        self.policy = policy
        self.transform = copy.deepcopy(policy.transform)
        self._py = random.Random()
        self._bitgen = np.random.PCG64()
        self._empty = not getattr(self.transform, "transforms", True)
        self.transform.set_random_state(np.random.Generator(self._bitgen), self._py)

    def _reseed(self, seed: int) -> None:
        digest = hashlib.blake2b(int(seed).to_bytes(16, "little", signed=True),
                                 digest_size=24).digest()
        self._bitgen.state = {
            "bit_generator": "PCG64",
            "state": {"state": int.from_bytes(digest[:16], "little"), "inc": PCG_INC},
            "has_uint32": 0,
            "uinteger": 0,
        }
        self._py.seed(int.from_bytes(digest[16:], "little"))

    def augment(self, image: np.ndarray, seed: int) -> np.ndarray:
        """The augmented copy of one (H, W, 3) uint8 image; same (image, seed), same bytes."""
        if self._empty:
            return image.copy()
        self._reseed(seed)
        out = self.transform(image=image)["image"]
        if out.shape != image.shape or out.dtype != np.uint8:
            raise InputError(
                f"{self.policy.source or self.policy.name}: policy '{self.policy.name}' turned a "
                f"{image.shape} uint8 image into {out.shape} {out.dtype}; a policy must keep "
                "the image size and dtype")
        return out

    def augment_batch(self, images: np.ndarray, seeds: Any) -> np.ndarray:
        """``augment`` over (n, H, W, 3) uint8 images with one seed each."""
        seeds = list(seeds)
        if len(seeds) != len(images):
            raise ValueError(f"{len(images)} images but {len(seeds)} seeds")
        out = np.empty_like(images)
        for i, (img, s) in enumerate(zip(images, seeds, strict=True)):
            out[i] = self.augment(img, s)
        return out

    def mix(self, images: np.ndarray, labels: np.ndarray, num_classes: int,
            seed: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The batch stage: (images, soft labels) if the policy mixes, else (images, None)."""
        if self.policy.mix is None:
            return images, None
        return mix_batch(images, labels, num_classes, self.policy.mix, seed)
