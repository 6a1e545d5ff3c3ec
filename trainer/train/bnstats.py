"""BatchNormalization statistics that match the weights they normalise for.

``recompute_bn_statistics`` is "precise BN" (pycls; Wu & Johnson 2021): after training, every
BatchNormalization layer's moving mean and variance are replaced by the exact mean and variance
of its inputs over the given images, computed with the final weights. The moving averages
gathered during training lag behind weights that kept changing and were measured on augmented
images, which is what makes a short run collapse to one class in inference mode.

``adapt_bn`` applies the same computation to unlabelled *target* images before predicting them:
test-time adaptation of the normalisation statistics (Schneider et al. 2020, "Improving
robustness against common corruptions by covariate shift adaptation"). It only changes the
model object in memory, never a file.

How: each batch runs through the model in inference mode (Dropout, stochastic depth, noise
layers all off) except that every BatchNormalization layer, at any depth of nested sub-models,
is forced into training mode with momentum 0, so after the batch its moving mean/variance hold
that batch's per-channel mean and (biased) variance; these are pooled in float64, weighted by
batch size, into the exact mean and variance over all images (variance by E[x^2] - E[x]^2, so
the spread between batches counts too). Later layers see inputs normalised with batch
statistics, as in training and as in pycls.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np


def batchnorm_layers(model: Any, include_frozen: bool = False) -> list[Any]:
    """Every keras BatchNormalization layer of ``model``, nested sub-models included; frozen
    ones (``trainable=False``, which keras always runs with their moving statistics) only
    when ``include_frozen``."""
    import keras

    layers = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
              if isinstance(layer, keras.layers.BatchNormalization)]
    return [bn for bn in layers if include_frozen or _trainable(bn, model)]


def _trainable(bn: Any, model: Any) -> bool:
    # keras applies a parent's trainable=False to its children, so bn.trainable says it all
    return bool(bn.trainable and model.trainable)


def _forced_training_call(call: Any) -> Any:
    def forced(inputs: Any, training: Any = None, mask: Any = None) -> Any:
        return call(inputs, training=True, mask=mask)

    return forced


def _compiled(model: Any) -> Any:
    """``model(x, training=False)``, as one graph under TensorFlow (about 2x faster than
    eager); traced after the BN layers were patched, so the graph holds the patched calls."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return lambda x: model(x, training=False)
    import tensorflow as tf

    return tf.function(lambda x: model(x, training=False), reduce_retracing=True)


def recompute_bn_statistics(model: Any, batches: Iterable[np.ndarray], *,
                            include_frozen: bool = False) -> int:
    """Replace the moving mean/variance of ``model``'s BatchNormalization layers by the exact
    per-channel mean/variance of their inputs over all images in ``batches``.

    Args:
        model: a keras model (BN layers may sit in nested sub-models).
        batches: arrays of images in the model's input format (uint8 (n, H, W, 3) for ours);
            a generator is consumed once.
        include_frozen: also recompute layers with ``trainable=False``. Off for precise BN
            after training, because a frozen layer (a pretrained backbone's) was trained
            against its fixed statistics; on for test-time adaptation.

    Returns:
        How many images were seen; 0 leaves every statistic as it was.
    """
    bns = batchnorm_layers(model, include_frozen)
    if not bns:
        return 0
    saved = [(bn.momentum, bn.trainable) for bn in bns]
    sums = [np.zeros((2, int(np.prod(bn.moving_mean.shape))), np.float64) for bn in bns]
    count = 0
    try:
        for bn in bns:
            bn.trainable = True  # keras ignores training=True for a frozen layer
            bn.momentum = 0.0  # after a batch the moving statistics are that batch's own
            object.__setattr__(bn, "call", _forced_training_call(type(bn).call.__get__(bn)))
        forward = _compiled(model)
        for x in batches:
            n = len(x)
            if not n:
                continue
            forward(x)
            for bn, acc in zip(bns, sums, strict=True):
                mean = np.asarray(bn.moving_mean.numpy(), np.float64).reshape(-1)
                var = np.asarray(bn.moving_variance.numpy(), np.float64).reshape(-1)
                acc[0] += n * mean
                acc[1] += n * (var + mean * mean)
            count += n
    finally:
        for bn, (momentum, trainable) in zip(bns, saved, strict=True):
            object.__delattr__(bn, "call")
            bn.momentum = momentum
            bn.trainable = trainable
    if count:
        for bn, acc in zip(bns, sums, strict=True):
            mean = acc[0] / count
            var = np.maximum(acc[1] / count - mean * mean, 0.0)
            bn.moving_mean.assign(mean.reshape(bn.moving_mean.shape).astype(np.float32))
            bn.moving_variance.assign(var.reshape(bn.moving_variance.shape).astype(np.float32))
    return count


def snapshot_bn_statistics(model: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every BN layer's (moving mean, moving variance), to put back with ``restore``."""
    return [(bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy())
            for bn in batchnorm_layers(model, include_frozen=True)]


def restore_bn_statistics(model: Any, saved: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for bn, (mean, var) in zip(batchnorm_layers(model, include_frozen=True), saved, strict=True):
        bn.moving_mean.assign(mean)
        bn.moving_variance.assign(var)


def batches_of(images: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Consecutive slices of ``images``, ``batch_size`` at a time."""
    for start in range(0, len(images), batch_size):
        yield images[start : start + batch_size]


def adapt_bn(model: Any, images: np.ndarray, batch_size: int = 64) -> int:
    """Test-time adaptation: every BN layer (frozen ones too) takes the statistics of the
    unlabelled target ``images``; the model in memory changes, no file does. Returns the
    number of images used."""
    return recompute_bn_statistics(model, batches_of(images, batch_size), include_frozen=True)
