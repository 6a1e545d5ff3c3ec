"""Model construction: shapes, uint8 input, head, trainable phases, weights and their errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from builder.errors import InputError
from trainer import models


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
    with pytest.raises(InputError, match="allowed: simple_cnn, efficientnetv2b0"):
        models.build_model("resnet50", (32, 32, 3), 3)


def test_model_names_match_the_applications():
    # MODEL_NAMES lives in trainer.config (no keras import, for --help); models builds them.
    assert ("simple_cnn", *models.APPLICATIONS) == models.MODEL_NAMES


def test_imagenet_download_failure_is_one_clear_line(monkeypatch):
    def no_internet(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/x.h5: None -- "
                        "[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("keras.src.utils.file_utils.get_file", no_internet)
    monkeypatch.setattr("keras.src.applications.efficientnet_v2.file_utils.get_file",
                        no_internet)
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
