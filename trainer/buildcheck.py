"""What ``fit`` needs of the builds it reads, checked before anything is written and without
TensorFlow (the CLI checks them first): a build a classifier can learn from, a fine build of
the same images and split, and the class weights of its train split."""

from __future__ import annotations

from typing import Any

from frozenaug.common.errors import InputError


def class_weights(counts: list[int]) -> dict[int, float]:
    """fit's class weights: balanced, n / (C * n_c); a class absent from train gets 1 (it never
    occurs)."""
    n, c = sum(counts), len(counts)
    return {i: (n / (c * k) if k else 1.0) for i, k in enumerate(counts)}


def check_trainable(manifest: Any) -> None:
    """A build a classifier can learn from: two classes or more (a softmax over one class
    learns nothing, and its labels break the stream)."""
    if manifest.num_classes < 2:
        raise InputError(f"{manifest.root}: the build has {manifest.num_classes} class; a "
                         "classifier needs at least 2 (build from data with two or more "
                         "classes)")


def check_fine_build(manifest: Any, fine: Any) -> None:
    """The fine phase's build must hold the same images, classes and split as the run's build:
    its train split is read in place of the run's, and the val and test splits, which select
    and judge the model, must not hold any of its training images."""
    where = f"{fine.root}: --fine-build"
    if list(fine.class_names) != list(manifest.class_names):
        raise InputError(f"{where} has classes {fine.class_names}, {manifest.root} has "
                         f"{manifest.class_names}")
    if list(fine.image_shape) != list(manifest.image_shape):
        raise InputError(f"{where} holds images of {tuple(fine.image_shape)}, {manifest.root} "
                         f"of {tuple(manifest.image_shape)}")
    if fine.split_identity() != manifest.split_identity():
        raise InputError(f"{where} splits another input or splits it differently than "
                         f"{manifest.root} (its split.json differs): its train images could be "
                         "in the val or test split; build it from the same input with the same "
                         "--seed, --split and cleaning options")
