"""The public Python API: what the two console scripts do, as functions and two small objects.

    import frozenaug as fa

    b = fa.build("data.npz", "B", epochs=10, policy="heavy", seed=0)  # or fa.open_build("B")
    model.fit(b.dataset("train", batch_size=64), validation_data=b.dataset("val"),
              epochs=20, class_weight=b.class_weights())
    for images, labels in b.batches("test", batch_size=256): ...      # plain numpy

    run = fa.fit("B", "RUN", model="small_resnet", epochs_coarse=30)  # or fa.load_run("RUN")
    proba = run.predict(images)                                       # (n, classes)

Every function takes the CLI's options as keyword arguments (``frozenaug-build build --help``,
``frozenaug-train fit --help``; dashes become underscores), checks them by the same rules and
raises the CLI's errors: :class:`InputError` (one line naming the file or option) for bad input,
``TypeError`` for an option that does not exist. TensorFlow is imported only by what needs it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from frozenaug import format as fmt
from frozenaug.common.errors import InputError
from frozenaug.common.safeparse import read_json

if TYPE_CHECKING:
    import tensorflow as tf

    from frozenaug.trainer.read.stream import ShardStream

__all__ = ["Build", "InputError", "Run", "build", "clean", "fit", "load_run", "open_build",
           "scan"]


class Build:
    """A finished build folder, read through its manifest (never globbed).

    Attributes:
        path: the build folder.
        manifest: the parsed manifest (``frozenaug.format.Manifest``).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.manifest = fmt.load_manifest(self.path)

    def __repr__(self) -> str:
        return (f"Build({str(self.path)!r}: {self.num_classes} classes, images "
                f"{'x'.join(map(str, self.image_shape))}, K={self.epochs}, {self.encoding})")

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest.class_names)

    @property
    def num_classes(self) -> int:
        return self.manifest.num_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, 3) of every image."""
        return tuple(self.manifest.image_shape)  # type: ignore[return-value]

    @property
    def epochs(self) -> int:
        """K, the number of frozen epochs of the train split."""
        return self.manifest.epochs

    @property
    def encoding(self) -> str:
        """How the train shards store images (``raw``, ``jpeg:95``, ...)."""
        return self.manifest.encoding

    def counts(self, split: str = "train") -> list[int]:
        """Images per class in ``split`` (train: one frozen epoch)."""
        _check_split(split)
        return self.manifest.class_counts(split)

    def class_weights(self) -> dict[int, float]:
        """Keras ``class_weight`` as fit uses it: balanced over the split's real train counts
        (before MixUp/CutMix), n / (classes x count)."""
        from frozenaug.trainer.buildcheck import class_weights

        return class_weights(self.manifest.split_counts("train"))

    def stream(self, split: str = "train", *, batch_size: int = 64, shuffle: bool | None = None,
               seed: int = 0, soft_labels: bool | None = None, drop_remainder: bool = False,
               verify: bool = False) -> ShardStream:
        """The reader behind :meth:`dataset` and :meth:`batches` (shuffle: default on for train
        only; soft labels: where the shards have them, MixUp/CutMix)."""
        from frozenaug.trainer.read.stream import ShardStream

        _check_split(split)
        return ShardStream(self.manifest, split, batch_size=batch_size,
                           shuffle=split == "train" if shuffle is None else shuffle, seed=seed,
                           soft_labels=soft_labels, drop_remainder=drop_remainder,
                           verify=verify)

    def dataset(self, split: str = "train", *, batch_size: int = 64, initial_epoch: int = 0,
                repeat: bool = False, **stream_options: Any) -> tf.data.Dataset:
        """A ``tf.data.Dataset`` of (uint8 images (b,H,W,3), float32 labels (b,C)) batches.

        Iterated once per Keras epoch: Keras epoch e reads frozen epoch e mod K, shuffled by
        (seed, e). Labels are one-hot, or soft where MixUp/CutMix mixed the images, so compile
        with ``categorical_crossentropy``. ``repeat=True`` gives an endless dataset for
        ``fit(steps_per_epoch=...)`` (under a ``tf.distribute`` strategy, use that).
        """
        s = self.stream(split, batch_size=batch_size, **stream_options)
        return s.dataset(initial_epoch, repeat=repeat)

    def batches(self, split: str = "train", *, batch_size: int = 64, epoch: int = 0,
                **stream_options: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The batches of one Keras epoch as numpy arrays (the same ones :meth:`dataset`
        yields for that epoch); needs no TensorFlow."""
        return self.stream(split, batch_size=batch_size, **stream_options).iter_numpy(epoch)

    def arrays(self, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
        """All images and hard labels (int32) of a split in manifest order (train: frozen
        epoch 0): for val/test, small enough to hold."""
        s = self.stream(split, batch_size=1024, shuffle=False, soft_labels=False)
        images = np.concatenate([x for x, _ in s.iter_numpy(0)])
        return images, s.labels(0)


def _check_split(split: str) -> None:
    if split not in fmt.SPLITS:
        raise ValueError(f"split must be one of {', '.join(fmt.SPLITS)}, got {split!r}")


def open_build(path: str | os.PathLike) -> Build:
    """Open a finished build folder.

    Raises:
        InputError: no build there, or its manifest is missing, damaged or of another format.
    """
    return Build(path)


def _namespace(options: Any, given: dict[str, Any], what: str) -> argparse.Namespace:
    """The argparse namespace the CLI would make: every option None (not given) but these."""
    names = {o.name for o in options}
    unknown = sorted(set(given) - names)
    if unknown:
        raise TypeError(f"{what}: unknown option(s) {', '.join(unknown)}; known: "
                        f"{', '.join(sorted(names))}")
    return argparse.Namespace(**{**{n: None for n in names}, **given})


def scan(input: str | os.PathLike, out: str | os.PathLike, **options: Any) -> dict[str, Any]:
    """``frozenaug-build scan``: writes ``out/scan.json`` and ``out/scan.png``; returns the
    scan report (docs/SCAN.md). Options: size, classes, strict, medmnist_split, jobs,
    threshold, outlier_min."""
    from frozenaug.builder.clean.cleaning import cmd_scan
    from frozenaug.builder.config import SCAN_OPTIONS, check_flags

    args = _namespace(SCAN_OPTIONS, {**options, "input": str(input), "out": str(out)}, "scan")
    check_flags(args, SCAN_OPTIONS)
    cmd_scan(args)
    return read_json(Path(out) / "scan.json", "scan report")


def clean(input: str | os.PathLike, out: str | os.PathLike, **options: Any) -> dict[str, Any]:
    """``frozenaug-build clean``: the scan plus ``out/cleaned.npz`` and ``out/split.json``;
    returns the split (docs/SCAN.md). Options: scan's, split, seed."""
    from frozenaug.builder.clean.cleaning import cmd_clean
    from frozenaug.builder.config import CLEAN_OPTIONS, check_flags

    args = _namespace(CLEAN_OPTIONS, {**options, "input": str(input), "out": str(out)}, "clean")
    check_flags(args, CLEAN_OPTIONS)
    cmd_clean(args)
    return read_json(Path(out) / fmt.SPLIT_NAME, "split file")


def build(input: str | os.PathLike, out: str | os.PathLike, *, config: str | None = None,
          **options: Any) -> Build:
    """``frozenaug-build build``: clean, split and freeze K augmented epochs into ``out``
    (resumes an interrupted build of the same config; ``overwrite=True`` replaces another).
    ``config``: a build config file, which the options override. Returns the build."""
    from frozenaug.builder.config import OPTIONS, load_build_config
    from frozenaug.builder.write.build import run_build

    given = {**options, "input": str(input), "out": str(out)}
    args = _namespace(OPTIONS.values(), given, "build")
    args.config = config
    run_build(load_build_config(args))
    return Build(out)


class Run:
    """A finished run folder: its Keras model and what it predicts.

    Attributes:
        path: the run folder.
        model: the trained ``keras.Model`` (uint8 images in, class probabilities out).
        class_names: the classes, in output order.
        image_shape: the (height, width, 3) the model takes.
        config: the run's ``FitConfig``.
    """

    def __init__(self, path: str | os.PathLike, *more: str | os.PathLike) -> None:
        from frozenaug.trainer.assess.runs import load_runs

        r = load_runs([path, *more])
        self.paths = [Path(p) for p in (path, *more)]
        self.path, self.model, self.config = r.path, r.model, r.config
        self.class_names, self.image_shape = list(r.class_names), tuple(r.image_shape)

    def __repr__(self) -> str:
        more = f" + {len(self.paths) - 1} more (ensemble)" if len(self.paths) > 1 else ""
        return (f"Run({str(self.path)!r}{more}: {self.config.model}, "
                f"{len(self.class_names)} classes)")

    def predict(self, images: np.ndarray, *, batch_size: int = 64, tta: bool | str = False,
                adapt_bn: bool = False) -> np.ndarray:
        """Class probabilities (n, classes) of uint8 images (n, H, W, 3) of the run's size;
        ``tta``: averaged over the 8 flips and rotations, as ``evaluate --tta``."""
        from frozenaug.trainer.assess.tta import predict_proba_timed

        images = np.asarray(images)
        if images.dtype != np.uint8 or images.shape[1:] != self.image_shape:
            raise ValueError(f"images must be uint8 (n, {', '.join(map(str, self.image_shape))})"
                             f", got {images.dtype} {images.shape}")
        return predict_proba_timed(self.model, images, batch_size, tta, adapt_bn)[0]


def load_run(path: str | os.PathLike, *more: str | os.PathLike) -> Run:
    """Open a finished run folder; with ``more``, several as one ensemble (``predict``
    averages their softmax; ``model`` is then the tuple of their models).

    Raises:
        InputError: a missing or damaged file of the run, named.
    """
    return Run(path)


def fit(build_dir: str | os.PathLike, out: str | os.PathLike, *, resume: bool = False,
        overwrite: bool = False, config: str | None = None, **options: Any) -> Run:
    """``frozenaug-train fit``: train the recipe on a build into the run folder ``out``
    (options: ``frozenaug-train fit --help``; ``resume`` continues an interrupted run with
    its stored config). Returns the finished run."""
    from frozenaug.trainer import config as cfgmod
    from frozenaug.trainer.train.fit import fit as _fit

    names = {o.name for o in cfgmod.OPTIONS.values()} - {"build_dir"}
    unknown = sorted(set(options) - names)
    if unknown:
        raise TypeError(f"fit: unknown option(s) {', '.join(unknown)}")
    run = Path(out)
    cfg = cfgmod.fit_config({**options, "build_dir": str(build_dir)}, config, run,
                            resume=resume, overwrite=overwrite)
    _fit(cfg, run, resume=resume, overwrite=overwrite)
    return Run(run)
