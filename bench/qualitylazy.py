"""bench/quality.py's lazy row: the same policy applied inside tf.data, timed per epoch."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np


def lazy_epoch_seconds(build: Path, work: Path, epochs: int = 2) -> float:
    """Seconds per epoch of the default model trained with the build's policy applied inside
    tf.data (a generator augmenting each batch, mixing as the policy says): lazy augmentation."""
    import keras
    import tensorflow as tf

    from frozenaug.builder.augment.augmenter import Augmenter
    from frozenaug.builder.augment.policy import policy_from_dict
    from frozenaug.common.seeds import batch_seed, sample_seed
    from frozenaug.format import load_manifest
    from frozenaug.trainer.train import models

    m = load_manifest(build)
    policy = policy_from_dict(m.raw["policy"], str(build))
    data = np.load(work / "train.npz")
    split = json.loads((build / "split.json").read_text())
    rows_ = np.asarray(split["splits"]["train"]["indices"], np.int64)  # rows of the input
    images, labels = data["images"][rows_], data["labels"].reshape(-1)[rows_]
    aug, c, bs = Augmenter(policy), m.num_classes, 64

    def gen():
        for e in range(epochs):
            order = np.random.default_rng(e).permutation(len(images))
            for b in range(0, len(order) - bs + 1, bs):
                idx = order[b:b + bs]
                x = aug.augment_batch(images[idx], [sample_seed(0, e, int(i)) for i in idx])
                x, y = aug.mix(x, labels[idx], c, batch_seed(0, e, b))
                yield x, (np.eye(c, dtype=np.float32)[labels[idx]] if y is None else y)

    ds = tf.data.Dataset.from_generator(gen, output_signature=(
        tf.TensorSpec((bs, *m.image_shape), tf.uint8), tf.TensorSpec((bs, c), tf.float32)))
    model = models.build_model("small_resnet", tuple(m.image_shape), c)
    model.compile(keras.optimizers.AdamW(1e-3), "categorical_crossentropy")
    steps = len(images) // bs
    t = time.perf_counter()
    model.fit(ds.prefetch(4), steps_per_epoch=steps, epochs=epochs, verbose=0)
    return (time.perf_counter() - t) / epochs
