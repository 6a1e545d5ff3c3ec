"""MixUp/CutMix drawn anew for every batch while reading (``fit --mix fresh``).

Freezing MixUp/CutMix into the shards fixes each image's partner and mixing ratio for good: K
frozen epochs hold only K mixes of any image. Mixing is a batch operation that costs a few
microseconds an image on uint8 arrays (frozenaug/imaging/mixing.py), so it can as well run while
reading, with a fresh partner and ratio every epoch, at no cost to the accelerator. The seed of a
batch is a hash of ``(seed, global step)``, so a resumed run draws the mixes an uninterrupted one
would.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from frozenaug.common.seeds import batch_seed
from frozenaug.imaging.mixing import MixConfig, mix_batch


def fresh_mix(ds: tf.data.Dataset, cfg: MixConfig, num_classes: int, seed: int,
              first_step: int = 0) -> tf.data.Dataset:
    """``ds``'s (uint8 images, one-hot labels) batches mixed; batch i uses step first_step+i."""

    def mix(images: np.ndarray, labels: np.ndarray, step: np.int64) -> tuple[np.ndarray, ...]:
        return mix_batch(images, labels.argmax(axis=1), num_classes, cfg,
                         batch_seed(seed, -1, int(step)))  # -1: apart from the build's

    def apply(step: tf.Tensor, batch: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, ...]:
        x, y = batch
        mx, my = tf.numpy_function(mix, [x, y, step], (tf.uint8, tf.float32), stateful=False)
        mx.set_shape(x.shape)
        my.set_shape(y.shape)
        return mx, my

    return ds.enumerate(start=first_step).map(apply, num_parallel_calls=1,
                                              deterministic=True).prefetch(2)
