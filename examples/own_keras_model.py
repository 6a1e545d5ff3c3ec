"""Train your own Keras model from a frozenaug build, with plain ``model.fit``.

    frozenaug-build build data/sample --out B --epochs 5 --policy light
    python examples/own_keras_model.py B --epochs 10

Each Keras epoch reads the next frozen epoch (e mod K) of the build, already augmented; the
labels are one-hot, or soft where the policy froze MixUp/CutMix, so the loss is categorical
cross-entropy. Images arrive as uint8: the model rescales them itself.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import frozenaug  # noqa: E402


def my_model(shape: tuple[int, int, int], classes: int) -> keras.Model:
    """Any model of yours: uint8 images in, class probabilities out."""
    return keras.Sequential([
        keras.Input(shape),
        keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(classes, activation="softmax"),
    ])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("build", help="a frozenaug build folder")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args()

    b = frozenaug.open_build(args.build)
    print(b)
    keras.utils.set_random_seed(0)
    model = my_model(b.image_shape, b.num_classes)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(b.dataset("train", batch_size=args.batch_size, seed=0),
              validation_data=b.dataset("val", batch_size=args.batch_size),
              epochs=args.epochs, class_weight=b.class_weights(), verbose=2)

    images, labels = b.arrays("test")
    predicted = model.predict(images, verbose=0).argmax(1)
    print(f"test accuracy {np.mean(predicted == labels):.4f} on {len(labels)} images")


if __name__ == "__main__":
    main()
