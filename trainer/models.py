"""Classifiers for uint8 images: a keras.applications backbone (or a small CNN) plus a SELU head.

Every model takes uint8 ``(H, W, 3)`` images: the cast to float and the backbone's own
preprocessing (EfficientNetV2's rescaling, ConvNeXt's normalisation, both built into
keras.applications with ``include_preprocessing=True``) are layers of the model, so they run on
the accelerator and a saved model needs no separate preprocessing step.

The head is one or more ``Dense(SELU, lecun_normal)`` + ``Dropout`` blocks and a softmax
``Dense`` with L2 on its kernel, kept in float32 under mixed precision. The head's regulariser
is chosen by the caller: L2 in the coarse phase, L1L2 in the fine phase (see trainer/fit.py).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import keras

from builder.errors import InputError
from trainer.config import MODEL_NAMES

HEAD_PREFIX = "head_dense_"
OUTPUT = "predictions"

# name -> keras.applications constructor (a callable so tests can build with weights=None);
# one for every name of trainer.config.MODEL_NAMES but simple_cnn.
APPLICATIONS: dict[str, Callable[..., keras.Model]] = {
    "efficientnetv2b0": keras.applications.EfficientNetV2B0,
    "efficientnetv2b3": keras.applications.EfficientNetV2B3,
    "convnext_tiny": keras.applications.ConvNeXtTiny,
    "convnext_small": keras.applications.ConvNeXtSmall,
    "convnext_base": keras.applications.ConvNeXtBase,
}


def check_model_name(name: str) -> str:
    if name not in MODEL_NAMES:
        raise InputError(f"--model {name!r}: unknown model; allowed: {', '.join(MODEL_NAMES)}")
    return name


def _simple_cnn(inputs: keras.KerasTensor) -> keras.KerasTensor:
    """Three conv blocks, global pooling: a few seconds an epoch on a CPU for tests and demos."""
    x = keras.layers.Rescaling(1.0 / 255, name="rescale")(inputs)
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
    head_units: list[int] | tuple[int, ...] = (256, 128),
    dropout: float = 0.3,
    head_regularizer: keras.regularizers.Regularizer | None = None,
    output_l2: float = 1e-4,
    seed: int | None = None,
) -> keras.Model:
    """A compiled-ready (not compiled) classifier; ``weights`` is imagenet, none or a file.

    With ``weights`` a file, it is loaded into the whole model if it fits, otherwise into the
    backbone (e.g. a backbone saved from another run). The backbone is named ``backbone`` and
    is called with ``training=False`` so its BatchNorm statistics never move.
    """
    check_model_name(name)
    inputs = keras.Input(shape=input_shape, dtype="uint8", name="image")
    # Rescaling(1) is a cast to the compute dtype that serialises without custom objects.
    x = keras.layers.Rescaling(1.0, name="to_float")(inputs)
    if name == "simple_cnn":
        x = _simple_cnn(x)
        backbone = None
    else:
        backbone = _backbone(name, input_shape, weights)
        x = backbone(x, training=False)
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


def set_trainable(model: keras.Model, phase: str, unfreeze: int) -> None:
    """Coarse: backbone frozen. Fine: its top ``unfreeze`` layers train, BatchNorm stays frozen.

    A model without a backbone (simple_cnn) trains whole in both phases.
    """
    model.trainable = True
    backbone = find_backbone(model)
    if backbone is None:
        return
    if phase == "coarse" or unfreeze <= 0:
        backbone.trainable = False
        return
    backbone.trainable = True
    layers = backbone.layers
    cut = max(0, len(layers) - unfreeze)
    for i, layer in enumerate(layers):
        layer.trainable = i >= cut and not isinstance(layer, keras.layers.BatchNormalization)
