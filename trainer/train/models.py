"""Classifiers for uint8 images: a keras.applications backbone (or a small CNN) plus a SELU head.

Every model takes uint8 ``(H, W, 3)`` images: the cast to float and the backbone's own
preprocessing (EfficientNetV2's rescaling, ConvNeXt's normalisation, both built into
keras.applications with ``include_preprocessing=True``) are layers of the model, so they run on
the accelerator and a saved model needs no separate preprocessing step.

The head is one or more ``Dense(SELU, lecun_normal)`` + ``Dropout`` blocks and a softmax
``Dense`` with L2 on its kernel, kept in float32 under mixed precision. The head's regulariser
is chosen by the caller: L2 in the coarse phase, L1L2 in the fine phase (see trainer/train/fit.py).

Pretrained or not. A backbone that starts from ImageNet (or a weights file) runs in inference
mode (``training=False``), so its BatchNorm statistics stay those it was trained with while the
head and later the top layers adapt: the classic two-phase transfer recipe. A backbone that
starts from random weights (``--weights none``) has no statistics worth keeping: it is called
like any layer, so BatchNorm normalises with batch statistics while training and updates its
moving averages, and every layer trains from the first step.

Input standardisation (``input_norm="image"``, from-scratch models only). Each image's channels
are shifted and scaled to zero mean and unit variance over its own pixels before the first
convolution: what microscopy calls a crude stain/white-balance normalisation. The network then
cannot see a per-channel gain or offset (brightness, contrast, stain intensity, white balance),
so it copes with colour changes it never trained on: on the shared set, a policy without the
colour family scored 0.62 instead of 0.29 under the colour distortions (bench/quality.py,
8 epochs), and with every family, 40 epochs, clean accuracy rose from 0.956 to 0.971. fit's
default (``input_norm="auto"``, trainer/config.py) turns it on for the small_resnets. Channel
swaps and grayscale remain unseen changes.

``small_resnet`` and ``small_resnet_wide`` are residual nets for 64-128 px images trained from
scratch: a two-convolution stem that brings 96 px to 24 px (most of a small CNN's time goes to
full-resolution layers that see only edges), then four stages of basic residual blocks
(He et al. 2016) at 24, 12, 6 and 3 px. 1.3 M (5.1 M wide) parameters with the default head;
training costs 3.2 ms (9.9 ms) of CPU per 96x96 image, about 12 s an epoch of 7,650 images on
2 idle cores (bench/quality.py prints the wall time).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import keras

from frozenaug.common.errors import InputError, brief
from frozenaug.trainer.config import MODEL_NAMES, SCRATCH_MODEL_NAMES

HEAD_PREFIX = "head_dense_"
OUTPUT = "predictions"

# name -> keras.applications constructor (a callable so tests can build with weights=None);
# one for every name of frozenaug.trainer.config.MODEL_NAMES but simple_cnn.
APPLICATIONS: dict[str, Callable[..., keras.Model]] = {
    "efficientnetv2b0": keras.applications.EfficientNetV2B0,
    "efficientnetv2b3": keras.applications.EfficientNetV2B3,
    "convnext_tiny": keras.applications.ConvNeXtTiny,
    "convnext_small": keras.applications.ConvNeXtSmall,
    "convnext_base": keras.applications.ConvNeXtBase,
}


def check_model_name(name: str) -> str:
    if name not in MODEL_NAMES:
        raise InputError(f"--model {brief(name)}: unknown model; allowed: {', '.join(MODEL_NAMES)}")
    return name


# name -> (stem widths, stage widths, blocks per stage) of the from-scratch residual nets.
SMALL_RESNETS: dict[str, tuple[tuple[int, int], tuple[int, ...], tuple[int, ...]]] = {
    "small_resnet": ((24, 32), (32, 64, 128, 256), (1, 1, 1, 1)),
    "small_resnet_wide": ((32, 64), (64, 128, 256, 512), (1, 1, 1, 1)),
}
# Models that never load ImageNet weights: they are built for training from scratch.


@keras.saving.register_keras_serializable("frozenaug")
class ImageStandardize(keras.layers.Layer):
    """Per image and channel: (x - mean) / sqrt(var + eps) over the image's pixels."""

    def __init__(self, epsilon: float = 1e-4, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)  # for [0, 1] inputs: a flat channel stays ~0, not inf

    def call(self, x: keras.KerasTensor) -> keras.KerasTensor:
        mean = keras.ops.mean(x, axis=(1, 2), keepdims=True)
        var = keras.ops.var(x, axis=(1, 2), keepdims=True)
        return (x - mean) / keras.ops.sqrt(var + self.epsilon)

    def get_config(self) -> dict:
        return {**super().get_config(), "epsilon": self.epsilon}


def _conv_bn(x: keras.KerasTensor, filters: int, kernel: int, stride: int, name: str,
             relu: bool = True) -> keras.KerasTensor:
    x = keras.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False,
                            kernel_initializer="he_normal", name=f"{name}_conv")(x)
    # momentum 0.9: short runs on small sets give few steps; 0.99 would leave the moving
    # statistics far from the weights they serve (fit also recomputes them at the end).
    x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x) if relu else x


def _basic_block(x: keras.KerasTensor, filters: int, stride: int, name: str) -> keras.KerasTensor:
    """Two 3x3 convolutions and an identity (or 1x1 projection) shortcut."""
    y = _conv_bn(x, filters, 3, stride, f"{name}_a")
    y = _conv_bn(y, filters, 3, 1, f"{name}_b", relu=False)
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, stride, f"{name}_proj", relu=False)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.Activation("relu", name=f"{name}_out")(y)


def _rescale(inputs: keras.KerasTensor, input_norm: str) -> keras.KerasTensor:
    x = keras.layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    return ImageStandardize(name="standardize")(x) if input_norm == "image" else x


def _small_resnet(inputs: keras.KerasTensor, name: str, input_norm: str) -> keras.KerasTensor:
    stem, widths, depths = SMALL_RESNETS[name]
    x = _rescale(inputs, input_norm)
    x = _conv_bn(x, stem[0], 3, 2, "stem0")
    x = _conv_bn(x, stem[1], 3, 2, "stem1")
    for stage, (filters, depth) in enumerate(zip(widths, depths, strict=True)):
        for block in range(depth):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, filters, stride, f"stage{stage}_block{block}")
    return keras.layers.GlobalAveragePooling2D(name="pool")(x)


def _simple_cnn(inputs: keras.KerasTensor, input_norm: str) -> keras.KerasTensor:
    """Three conv blocks, global pooling: a few seconds an epoch on a CPU for tests and demos."""
    x = _rescale(inputs, input_norm)
    for i, filters in enumerate((32, 64, 128)):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        # momentum 0.9, not 0.99: a small data set gives few steps, and with 0.99 the moving
        # statistics used at evaluation are still near their initial values after ~50 steps.
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = keras.layers.Activation("relu", name=f"relu{i}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    return keras.layers.GlobalAveragePooling2D(name="pool")(x)


def _backbone(name: str, input_shape: tuple[int, int, int], weights: str) -> keras.Model:
    """The keras.applications model without its top; ImageNet weights downloaded or cached."""
    try:
        return APPLICATIONS[name](
            include_top=False,
            weights="imagenet" if weights == "imagenet" else None,
            input_shape=input_shape,
            pooling="avg",
            include_preprocessing=True,
        )
    except Exception as e:  # keras.utils.get_file raises a bare Exception on a failed fetch
        if weights == "imagenet" and ("URL fetch failure" in str(e) or isinstance(e, OSError)):
            raise InputError(
                f"--weights imagenet: the ImageNet weights of {name} could not be downloaded "
                f"({str(e)[:120]}); use --weights none or a local .weights.h5/.keras file"
            ) from None
        if isinstance(e, ValueError) and "input size must be" in str(e).lower():
            raise InputError(
                f"--model {name}: images of {input_shape[0]}x{input_shape[1]} are too small "
                f"({e}); build with a larger --size or use --model simple_cnn"
            ) from None
        raise


def build_model(
    name: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    weights: str = "none",
    pretrained: bool | None = None,
    head_units: list[int] | tuple[int, ...] = (256, 128),
    dropout: float = 0.3,
    head_regularizer: keras.regularizers.Regularizer | None = None,
    output_l2: float = 1e-4,
    seed: int | None = None,
    input_norm: str = "none",
) -> keras.Model:
    """A compiled-ready (not compiled) classifier; ``weights`` is imagenet, none or a file.
    ``input_norm`` "image" standardises each image first (from-scratch models only).

    With ``weights`` a file, it is loaded into the whole model if it fits, otherwise into the
    backbone (e.g. a backbone saved from another run). ``pretrained`` (default: ``weights`` is
    not ``none``) calls the backbone with ``training=False``, so its BatchNorm statistics never
    move; a backbone trained from scratch is called in the ordinary way. The fine phase
    rebuilds a pretrained model with ``weights="none", pretrained=True`` and loads the coarse
    phase's weights into it.
    """
    check_model_name(name)
    if pretrained is None:
        pretrained = weights != "none"
    if weights == "imagenet" and name in SCRATCH_MODEL_NAMES:
        raise InputError(f"--weights imagenet: {name} has no ImageNet weights (it is built for "
                         "training from scratch); use --weights none or a weights file")
    if input_norm != "none" and name not in SCRATCH_MODEL_NAMES:
        raise InputError(f"--input-norm {input_norm}: only for the from-scratch models "
                         f"({', '.join(SCRATCH_MODEL_NAMES)}); {name} has its own preprocessing")
    inputs = keras.Input(shape=input_shape, dtype="uint8", name="image")
    # Rescaling(1) is a cast to the compute dtype that serialises without custom objects.
    x = keras.layers.Rescaling(1.0, name="to_float")(inputs)
    backbone = None
    if name == "simple_cnn":
        x = _simple_cnn(x, input_norm)
    elif name in SMALL_RESNETS:
        x = _small_resnet(x, name, input_norm)
    else:
        backbone = _backbone(name, input_shape, weights)
        x = backbone(x, training=False) if pretrained else backbone(x)
    init = keras.initializers.LecunNormal(seed=seed)
    for i, units in enumerate(head_units):
        x = keras.layers.Dense(
            int(units),
            activation="selu",
            kernel_initializer=init,
            kernel_regularizer=head_regularizer,
            name=f"{HEAD_PREFIX}{i}",
        )(x)
        x = keras.layers.Dropout(dropout, seed=seed, name=f"head_dropout_{i}")(x)
    outputs = keras.layers.Dense(
        num_classes,
        activation="softmax",
        kernel_regularizer=keras.regularizers.L2(output_l2) if output_l2 else None,
        dtype="float32",  # softmax and loss in float32 under mixed precision
        name=OUTPUT,
    )(x)
    model = keras.Model(inputs, outputs, name=name)
    if weights not in ("imagenet", "none"):
        load_weights_file(model, backbone, weights)
    return model


def load_weights_file(model: keras.Model, backbone: keras.Model | None, path: str) -> None:
    """Load a .weights.h5 or .keras file into ``model``, or failing that into ``backbone``."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--weights {path}: no such file (give imagenet, none or a file)")
    targets = [t for t in (model, backbone) if t is not None]
    errors = []
    for target in targets:
        try:
            if p.name.endswith(".weights.h5"):
                with warnings.catch_warnings():
                    # Keras only warns when parts of the file match nothing ("Skipping ...",
                    # weights left fresh): that is a file for the other target.
                    warnings.filterwarnings("error", message=".*[Ss]kipping", category=UserWarning)
                    target.load_weights(p)
            elif p.suffix == ".keras":
                source = keras.saving.load_model(p, compile=False)
                src = source.get_weights()
                if [w.shape for w in src] != [tuple(w.shape) for w in target.weights]:
                    raise ValueError("weight shapes differ")
                target.set_weights(src)
            else:
                raise InputError(f"--weights {path}: expected a .weights.h5 or .keras file")
            return
        except InputError:
            raise
        except Exception as e:  # h5py/keras raise a variety of types on a mismatch
            errors.append(f"{target.name}: {str(e).splitlines()[0][:100] if str(e) else e!r}")
    raise InputError(
        f"--weights {path}: fits neither the model nor its backbone ({'; '.join(errors)})"
    )


def find_backbone(model: keras.Model) -> keras.Model | None:
    """The nested keras.applications model (EfficientNetV2 needs its own name, so look by type)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            return layer
    return None


def head_regularizer(l1: float, l2: float) -> keras.regularizers.Regularizer | None:
    if l1 and l2:
        return keras.regularizers.L1L2(l1=l1, l2=l2)
    if l2:
        return keras.regularizers.L2(l2)
    if l1:
        return keras.regularizers.L1(l1)
    return None


def set_trainable(model: keras.Model, phase: str, unfreeze: int, pretrained: bool = True) -> None:
    """Pretrained: coarse, backbone frozen; fine, its top ``unfreeze`` layers train while
    BatchNorm stays frozen. From scratch (``pretrained=False``) or without a backbone
    (simple_cnn, small_resnet): the whole net trains in both phases, BatchNorm included.
    """
    model.trainable = True
    backbone = find_backbone(model)
    if backbone is None or not pretrained:
        return
    if phase == "coarse" or unfreeze <= 0:
        backbone.trainable = False
        return
    backbone.trainable = True
    layers = backbone.layers
    cut = max(0, len(layers) - unfreeze)
    for i, layer in enumerate(layers):
        layer.trainable = i >= cut and not isinstance(layer, keras.layers.BatchNormalization)
