"""GPU benchmark: ConvNeXtTiny training images/s fed from shards vs synthetic tensors vs lazy
augmentation (same model, same batch). One short run (< 5 min on one GPU).

    python bench/gpu.py [BUILD_DIR] [--batch-size 256] [--steps 100]
    python bench/gpu.py --quick        # a few tiny steps on CPU, to check that it runs

Without BUILD_DIR it writes one (2 frozen epochs) to /tmp/frozenaug-gpu-build from the shared
blood-cell set, or from random images where that set is absent. Synthetic tensors are one
fixed batch repeated: the model's own speed, with no input pipeline cost.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from read import in_memory, make_bench_build  # noqa: E402  (bench/read.py)

DEFAULT_BUILD = Path("/tmp/frozenaug-gpu-build")


def build_model(shape: tuple[int, int, int], classes: int, quick: bool):
    import keras

    inputs = keras.Input(shape, dtype="uint8")
    x = keras.ops.cast(inputs, "float32")  # uint8 goes in; ConvNeXt normalises 0..255 itself
    if quick:  # a small input keeps a CPU check to seconds
        x = keras.layers.Resizing(32, 32)(x)
    base = keras.applications.ConvNeXtTiny(
        weights=None, include_top=True, input_shape=(32, 32, 3) if quick else shape,
        classes=classes, classifier_activation=None,
    )
    outputs = keras.layers.Activation("softmax", dtype="float32")(base(x))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adamw", loss="categorical_crossentropy")
    return model


class StepTimer:
    """Wall time from the end of the warm-up steps to the end of the last step (the loss is
    read at both points, which waits for the device)."""

    def __init__(self, warm: int, steps: int) -> None:
        import keras

        outer = self

        class _CB(keras.callbacks.Callback):
            def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
                if batch in (warm - 1, warm + steps - 1):
                    float((logs or {}).get("loss", 0.0))
                    outer.marks.append(time.perf_counter())

        self.marks: list[float] = []
        self.callback = _CB()

    def seconds(self) -> float:
        return self.marks[-1] - self.marks[0]


def images_per_s(model, ds, batch: int, warm: int, steps: int) -> float:
    timer = StepTimer(warm, steps)
    model.fit(ds, epochs=1, steps_per_epoch=warm + steps, callbacks=[timer.callback], verbose=0)
    return steps * batch / timer.seconds()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("build", nargs="?", help=f"build directory (default: make {DEFAULT_BUILD})")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=100, help="timed steps per feed")
    p.add_argument("--warm", type=int, default=10, help="untimed steps first (compilation)")
    p.add_argument("--quick", action="store_true", help="tiny CPU run: does it work?")
    args = p.parse_args(argv)
    if args.quick:
        args.batch_size, args.steps, args.warm = 8, 3, 1

    if args.build:
        build = Path(args.build)
    else:
        out = DEFAULT_BUILD.with_name(DEFAULT_BUILD.name + ("-quick" if args.quick else ""))
        build = make_bench_build(out, epochs=2, limit=512 if args.quick else None)

    import keras
    import tensorflow as tf

    from frozenaug.trainer.read.stream import ShardStream

    gpus = tf.config.list_physical_devices("GPU")
    policy = "mixed_float16" if gpus else "mixed_bfloat16"
    b = args.batch_size
    stream = ShardStream(build, batch_size=b, drop_remainder=True)
    print(f"device {gpus[0].name if gpus else 'CPU'}, {policy}, build {build} "
          f"({stream.num_samples} images/epoch), batch {b}, {args.steps} timed steps per feed")
    x, y = next(stream.iter_numpy(0))
    synthetic = tf.data.Dataset.from_tensors((x, y)).repeat()
    # lazy augmentation works on the same (unaugmented-like) images held in memory
    xs = np.concatenate([xb for xb, _ in stream.iter_numpy(0)])
    ys = np.concatenate([yb for _, yb in stream.iter_numpy(0)])
    lazy = in_memory(xs, ys, b, augment=True, drop_remainder=True)  # float32 augmentation
    keras.mixed_precision.set_global_policy(policy)  # for the model only
    model = build_model(stream.image_shape, stream.num_classes, args.quick)

    rates = {}
    for name, ds in [("shards", stream.dataset(repeat=True)), ("synthetic", synthetic),
                     ("lazy augmentation", lazy)]:
        t = time.perf_counter()
        rates[name] = images_per_s(model, ds, b, args.warm, args.steps)
        print(f"{name:<18} {rates[name]:>9,.0f} images/s   ({time.perf_counter() - t:.0f} s)")
    print(f"shards / synthetic {rates['shards'] / rates['synthetic']:.2f}x   "
          f"shards / lazy augmentation {rates['shards'] / rates['lazy augmentation']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
