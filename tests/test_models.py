"""Model construction: shapes, uint8 input, head, trainable phases, weights and their errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from frozenaug.common.errors import InputError
from frozenaug.trainer.train import models


def test_simple_cnn_takes_uint8_and_outputs_probabilities():
    m = models.build_model("simple_cnn", (32, 32, 3), 4, head_units=[16, 8], dropout=0.2,
                           head_regularizer=keras.regularizers.L2(1e-3), seed=1)
    assert m.input.dtype == "uint8"
    heads = [layer for layer in m.layers if layer.name.startswith(models.HEAD_PREFIX)]
    assert [h.units for h in heads] == [16, 8]
    assert all(h.activation.__name__ == "selu" for h in heads)
    assert isinstance(heads[0].kernel_initializer, keras.initializers.LecunNormal)
    out = m.get_layer(models.OUTPUT)
    assert isinstance(out.kernel_regularizer, keras.regularizers.L2)
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    p = m.predict(x, verbose=0)
    assert p.shape == (2, 4) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    assert models.find_backbone(m) is None
    models.set_trainable(m, "coarse", 5)  # simple_cnn: the whole net trains in both phases
    assert len(m.trainable_weights) == len(m.weights) - 6  # minus BN moving mean/variance


def test_efficientnet_shapes_and_phases():
    m = models.build_model("efficientnetv2b0", (32, 32, 3), 3, weights="none",
                           head_units=[8])
    assert m.output_shape == (None, 3)
    backbone = models.find_backbone(m)
    assert backbone is not None
    models.set_trainable(m, "coarse", 20)
    head_vars = {id(v) for v in m.trainable_weights}
    assert not head_vars & {id(v) for v in backbone.weights}
    models.set_trainable(m, "fine", 20)
    trainable = [la for la in backbone.layers if la.trainable]
    assert 0 < len(trainable) <= 20
    assert all(la in backbone.layers[-20:] for la in trainable)
    assert not any(isinstance(la, keras.layers.BatchNormalization) for la in trainable)


def test_mixed_precision_keeps_softmax_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        m = models.build_model("simple_cnn", (32, 32, 3), 3, head_units=[8])
        assert m.get_layer(models.OUTPUT).compute_dtype == "float32"
        assert m.get_layer("conv0").compute_dtype == "float16"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_unknown_model_lists_allowed_names():
    with pytest.raises(InputError, match="allowed: small_resnet, small_resnet_wide, simple_cnn"):
        models.build_model("resnet50", (32, 32, 3), 3)


def test_model_names_match_the_builders():
    # MODEL_NAMES lives in trainer.config (no keras import, for --help); models builds them.
    assert set(models.SCRATCH_MODEL_NAMES) | set(models.APPLICATIONS) == set(models.MODEL_NAMES)


def _weights_by_path(model: keras.Model) -> dict[str, np.ndarray]:
    return {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.weights}


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_from_scratch_every_layer_trains(name):
    """--weights none: no frozen random backbone. After two steps every weight of the model
    (backbone included) has moved, and so has every BatchNorm's moving mean and variance."""
    keras.utils.set_random_seed(0)
    m = models.build_model(name, (32, 32, 3), 3, weights="none", head_units=[8])
    models.set_trainable(m, "coarse", 5, pretrained=False)
    assert len(m.trainable_weights) + len(m.non_trainable_weights) == len(m.weights)
    # Eager: tracing a large backbone into a graph costs more than two small steps (CI time).
    m.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy", jit_compile=False,
              run_eagerly=True)
    before = _weights_by_path(m)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 8)]
    m.fit(x, y, batch_size=4, epochs=1, verbose=0)
    after = _weights_by_path(m)
    unchanged = [k for k in before if np.array_equal(before[k], after[k])]
    assert not unchanged, unchanged[:5]
    bn = [v.path for layer in _all_layers(m) if isinstance(layer, keras.layers.BatchNormalization)
          for v in (layer.moving_mean, layer.moving_variance)]
    assert all(not np.array_equal(before[p], after[p]) for p in bn)
    assert bn or name.startswith("convnext")  # ConvNeXt normalises with LayerNorm only


def _all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    out = []
    for layer in model.layers:
        out += _all_layers(layer) if isinstance(layer, keras.Model) else [layer]
    return out


def test_pretrained_backbone_keeps_its_batchnorm_statistics():
    """A pretrained backbone runs in inference mode: training the head moves no statistics."""
    m = models.build_model("efficientnetv2b0", (32, 32, 3), 3, weights="none",
                           pretrained=True, head_units=[8])
    models.set_trainable(m, "coarse", 5, pretrained=True)
    bn = [layer for layer in _all_layers(m) if isinstance(layer, keras.layers.BatchNormalization)]
    before = [keras.ops.convert_to_numpy(b.moving_mean).copy() for b in bn]
    m.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy", jit_compile=False)
    x = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    m.fit(x, np.eye(3, dtype=np.float32)[np.arange(8) % 3], batch_size=4, verbose=0)
    for b, mean in zip(bn, before, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(b.moving_mean), mean)


def test_small_resnet_brings_96px_to_3px_and_rejects_imagenet():
    m = models.build_model("small_resnet", (96, 96, 3), 8, weights="none", head_units=[8])
    assert m.get_layer("pool").input.shape[1:3] == (3, 3)
    assert 1.0e6 < m.count_params() < 1.5e6
    with pytest.raises(InputError, match="no ImageNet weights"):
        models.build_model("small_resnet", (96, 96, 3), 8, weights="imagenet")


def test_imagenet_download_failure_is_one_clear_line(monkeypatch, tmp_path):
    """An air-gapped machine: every connection is refused (as by a firewall), nothing is
    cached; Keras' real download path fails and the user gets one line, not a traceback."""
    import socket

    def refused(*args, **kwargs):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(socket, "create_connection", refused)
    monkeypatch.setattr(socket.socket, "connect", refused)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # no cached weights
    with pytest.raises(InputError) as e:
        models.build_model("efficientnetv2b0", (32, 32, 3), 3, weights="imagenet")
    msg = str(e.value)
    assert "could not be downloaded" in msg and "--weights none" in msg and "\n" not in msg


def test_weights_file_whole_model_and_errors(tmp_path):
    a = models.build_model("simple_cnn", (32, 32, 3), 3, head_units=[8], seed=1)
    a.save_weights(tmp_path / "a.weights.h5")
    a.save(tmp_path / "a.keras")
    for name in ("a.weights.h5", "a.keras"):
        b = models.build_model("simple_cnn", (32, 32, 3), 3, head_units=[8], seed=2,
                               weights=str(tmp_path / name))
        for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
            np.testing.assert_array_equal(wa, wb)
    with pytest.raises(InputError, match="no such file"):
        models.build_model("simple_cnn", (32, 32, 3), 3, weights=str(tmp_path / "nope.h5"))
    with pytest.raises(InputError, match="fits neither"):
        models.build_model("simple_cnn", (32, 32, 3), 5, head_units=[8],
                           weights=str(tmp_path / "a.weights.h5"))


def test_input_norm_image_ignores_channel_gain_and_offset_and_survives_save(tmp_path):
    """--input-norm image: an image and the same image with each channel shifted (a white-balance
    change, exact in uint8) get the same prediction, where a plain model's changes; a channel's
    gain leaves the standardised input as it was (up to epsilon); the saved model loads."""
    rng = np.random.default_rng(0)
    x = rng.integers(10, 100, (4, 32, 32, 3), dtype=np.uint8)
    shifted = x + np.array([0, 60, 30], np.uint8)
    normed = models.build_model("small_resnet", (32, 32, 3), 3, head_units=[8], seed=1,
                                input_norm="image")
    plain = models.build_model("small_resnet", (32, 32, 3), 3, head_units=[8], seed=1)
    p = normed.predict(x, verbose=0)
    normed_change = np.abs(p - normed.predict(shifted, verbose=0)).max()
    plain_change = np.abs(plain.predict(x, verbose=0) - plain.predict(shifted, verbose=0)).max()
    assert normed_change < 1e-4 and plain_change > 100 * normed_change
    layer = models.ImageStandardize()
    unit = np.asarray(layer(x.astype(np.float32) / 255))
    doubled = np.asarray(layer(x.astype(np.float32) * np.array([2, 1, 2], np.float32) / 255))
    np.testing.assert_allclose(unit, doubled, atol=2e-2)
    assert np.abs(unit.mean(axis=(1, 2))).max() < 1e-4
    normed.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    np.testing.assert_allclose(again.predict(x, verbose=0), p, atol=1e-6)
    with pytest.raises(InputError, match="from-scratch"):
        models.build_model("efficientnetv2b0", (32, 32, 3), 3, input_norm="image")
