"""Tiny build directories for tests, written with the builder's own shard and manifest code.

Images are learnable (each class has its own colour, plus noise) and traceable: pixel (0, 0)
carries a stamp, channels (source_index % 256, source_index // 256, epoch), which
``read_stamp`` decodes, so a test can tell which sample of which frozen epoch it received.
val/test shards stamp epoch ``VAL_TEST_EPOCH_STAMP``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from frozenaug import format as fmt
from frozenaug.builder.write.shards import write_shard
from frozenaug.common.atomic import write_json

VAL_TEST_EPOCH_STAMP = 255


def read_stamp(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(source_index, epoch stamp) of each image in a (b, H, W, 3) uint8 batch."""
    px = images[:, 0, 0, :].astype(np.int64)
    return px[:, 0] + 256 * px[:, 1], px[:, 2]


def _images(labels: np.ndarray, src: np.ndarray, epoch: int, size: int,
            colours: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noise = rng.normal(0, 20, (len(labels), size, size, 3))
    x = np.clip(colours[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    x[:, 0, 0, 0] = src % 256
    x[:, 0, 0, 1] = src // 256
    x[:, 0, 0, 2] = epoch
    return x


def _soft(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """MixUp-like targets: mass lam >= 0.5 on the label, the rest on another class."""
    lam = rng.uniform(0.5, 1.0, len(labels)).astype(np.float32)
    other = (labels + rng.integers(1, num_classes, len(labels))) % num_classes
    y = np.zeros((len(labels), num_classes), np.float32)
    y[np.arange(len(labels)), labels] += lam
    y[np.arange(len(labels)), other] += 1 - lam
    return y


def make_build(
    root: str | Path,
    *,
    n_per_class: int = 8,
    epochs: int = 2,
    num_classes: int = 3,
    size: int = 8,
    soft_labels: bool = False,
    shard_size: int = 16,
    seed: int = 0,
    val_per_class: int = 2,
    test_per_class: int = 2,
) -> Path:
    """Write a build directory with ``epochs`` frozen train epochs (each the same
    ``n_per_class * num_classes`` samples, in another order, with other noise), and val/test
    splits; return its path. Train shards get soft labels when ``soft_labels``."""
    if num_classes < 2 or n_per_class < 1:
        raise ValueError("need at least 2 classes and 1 sample per class")
    root = Path(root)
    rng = np.random.default_rng(seed)
    class_names = [f"class{c}" for c in range(num_classes)]
    colours = rng.uniform(30, 225, (num_classes, 3))
    counts = {"train": n_per_class, "val": val_per_class, "test": test_per_class}
    offset, splits = 0, {}
    for split, k in counts.items():
        labels = np.repeat(np.arange(num_classes, dtype=np.int32), k)
        splits[split] = (labels, np.arange(offset, offset + len(labels), dtype=np.int64))
        offset += len(labels)
    if offset > 65536:
        raise ValueError("the pixel stamp holds source indices below 65536")

    entries: list[fmt.ShardEntry] = []

    def write(split: str, epoch: int, labels: np.ndarray, src: np.ndarray, stamp: int) -> None:
        for i, a in enumerate(range(0, len(labels), shard_size)):
            lab, idx = labels[a : a + shard_size], src[a : a + shard_size]
            rel = fmt.shard_relpath(split, i, epoch)
            entries.append(write_shard(
                root / rel, _images(lab, idx, stamp, size, colours, rng), lab, idx,
                class_names=class_names, split=split, shard_index=i, epoch=epoch,
                policy_hash="test", relpath=rel,
                soft_labels=_soft(lab, num_classes, rng) if soft_labels and split == "train"
                else None,
            ))

    labels, src = splits["train"]
    for e in range(epochs):
        order = rng.permutation(len(labels))  # a builder writes each epoch shuffled
        write("train", e, labels[order], src[order], e)
    for split in ("val", "test"):
        if len(splits[split][0]):
            write(split, -1, *splits[split], VAL_TEST_EPOCH_STAMP)
    manifest = fmt.make_manifest(
        class_names=class_names, image_shape=(size, size, 3), epochs=epochs, seed=seed,
        shards=entries,
    )
    write_json(root / fmt.MANIFEST_NAME, manifest)
    return root


def make_run(root: str | Path, size: int = 32) -> Path:
    """A finished one-epoch simple_cnn run on a tiny 3-class build; returns the run folder."""
    from frozenaug.trainer.config import FitConfig
    from frozenaug.trainer.train.fit import fit

    root = Path(root)
    build = make_build(root / "b", n_per_class=4, num_classes=3, size=size)
    cfg = FitConfig(build_dir=str(build), model="simple_cnn", weights="none", epochs_coarse=1,
                    epochs_fine=0, batch_size=8, head_units=[8])
    fit(cfg, root / "run", verbose=0, eager=True)
    return root / "run"
