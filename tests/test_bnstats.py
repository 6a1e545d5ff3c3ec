"""Precise BN and test-time BN adaptation on tiny models, nested sub-models and Dropout."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from frozenaug.trainer.train.bnstats import (  # noqa: E402
    adapt_bn,
    batches_of,
    batchnorm_layers,
    recompute_bn_statistics,
)


def _tiny(seed: int = 0) -> keras.Model:
    """uint8 in; Dropout before the first BN (must not matter), the first BN in a nested model,
    a second BN after it."""
    keras.utils.set_random_seed(seed)
    inner_in = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(5, 3, padding="same", name="inner_conv")(inner_in)
    y = keras.layers.BatchNormalization(momentum=0.99, name="inner_bn")(y)
    inner = keras.Model(inner_in, keras.layers.ReLU()(y), name="inner")
    inp = keras.Input((8, 8, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inp)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inner(x))
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))


@pytest.fixture()
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (37, 8, 8, 3), dtype=np.uint8)


def _inner_bn(model: keras.Model):
    return model.get_layer("inner").get_layer("inner_bn")


def test_recompute_gives_exact_mean_and_variance(images):
    model = _tiny()
    n = recompute_bn_statistics(model, batches_of(images, 8))  # batches 8, 8, 8, 8, 5
    assert n == len(images)
    # the nested BN: its inputs are the inner conv of the rescaled images (Dropout off)
    conv = model.get_layer("inner").get_layer("inner_conv")
    x = conv(images.astype(np.float32) / 255).numpy().reshape(-1, 5)
    np.testing.assert_allclose(_inner_bn(model).moving_mean.numpy(), x.mean(0), atol=1e-4)
    np.testing.assert_allclose(_inner_bn(model).moving_variance.numpy(), x.var(0),
                               rtol=1e-3, atol=1e-5)
    assert _inner_bn(model).momentum == pytest.approx(0.99)  # restored
    # the outer BN's inputs depend on how the inner BN normalised (batch statistics): with
    # one whole-set batch those equal the recomputed moving statistics, so an inference-mode
    # probe sees exactly what the recomputation saw
    model = _tiny()
    recompute_bn_statistics(model, [images])
    probe = keras.Model(model.inputs, model.get_layer("conv").output)
    x = probe.predict(images, verbose=0).reshape(-1, 4)
    bn = model.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), x.mean(0), atol=1e-4)
    np.testing.assert_allclose(bn.moving_variance.numpy(), x.var(0), rtol=1e-3, atol=1e-5)


def test_recompute_is_independent_of_batching_and_dropout(images):
    a, b = _tiny(), _tiny()
    recompute_bn_statistics(a, batches_of(images, 4))
    recompute_bn_statistics(b, batches_of(images, 16))
    np.testing.assert_allclose(_inner_bn(a).moving_mean.numpy(),
                               _inner_bn(b).moving_mean.numpy(), atol=1e-5)
    np.testing.assert_allclose(_inner_bn(a).moving_variance.numpy(),
                               _inner_bn(b).moving_variance.numpy(), rtol=1e-4)
    # Dropout stayed off (it would draw new masks): recomputing again gives the same numbers
    first = a.get_layer("bn").moving_variance.numpy().copy()
    recompute_bn_statistics(a, batches_of(images, 4))
    np.testing.assert_allclose(a.get_layer("bn").moving_variance.numpy(), first, rtol=1e-5)


def test_frozen_layers_only_on_request(images):
    model = _tiny()
    model.get_layer("inner").trainable = False
    frozen = _inner_bn(model)
    assert [bn.name for bn in batchnorm_layers(model)] == ["bn"]
    before = frozen.moving_mean.numpy().copy()
    recompute_bn_statistics(model, [images])
    np.testing.assert_array_equal(frozen.moving_mean.numpy(), before)
    assert adapt_bn(model, images, batch_size=10) == len(images)
    assert not np.allclose(frozen.moving_mean.numpy(), before)
    assert frozen.trainable is False and model.get_layer("bn").trainable is True


def test_no_images_changes_nothing_and_new_statistics_change_predictions(images):
    model = _tiny()
    before = model.predict(images, verbose=0)
    assert recompute_bn_statistics(model, []) == 0
    assert recompute_bn_statistics(model, [images[:0]]) == 0
    np.testing.assert_array_equal(model.predict(images, verbose=0), before)
    recompute_bn_statistics(model, [images])
    assert not np.allclose(model.predict(images, verbose=0), before)
