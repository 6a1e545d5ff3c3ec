"""A shard's bytes depend only on its content."""

import sys
import threading

import numpy as np

from frozenaug.builder.write.shards import write_shard

CLASSES = ["a", "b", "c"]


def _write(path, images, labels):
    return write_shard(path, images, labels, np.arange(len(images)), class_names=CLASSES,
                       split="train", shard_index=0, epoch=0, policy_hash="x")


def test_same_content_same_bytes_even_while_another_thread_holds_frames(tmp_path):
    # dask workers run a profiler thread that keeps references to running frames; that used to
    # delay the close of an HDF5 dataset and move its chunk inside the file.
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (70, 16, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, 70)
    stop = threading.Event()
    held = []

    def sample_frames():
        while not stop.is_set():
            held.append(sys._current_frames())
            del held[:-2]

    sampler = threading.Thread(target=sample_frames, daemon=True)
    sampler.start()
    try:
        digests = {_write(tmp_path / f"s{i}.h5", images, labels).sha256 for i in range(40)}
    finally:
        stop.set()
        sampler.join()
    assert len(digests) == 1


def test_class_counts_and_entry(tmp_path):
    images = np.zeros((5, 8, 8, 3), np.uint8)
    entry = _write(tmp_path / "s.h5", images, np.array([0, 2, 2, 1, 2]))
    assert entry.samples == 5 and entry.class_counts == [1, 1, 3]
    assert not entry.soft_labels and len(entry.sha256) == 64


def test_encoded_shard_needs_only_its_encoded_size_on_disk(tmp_path, monkeypatch):
    """The free-space check of an encoded shard uses its encoded size, known before HDF5
    writes: a disk too small for the raw shard takes the JPEG one, and the estimate is above
    the file's real size."""
    import cv2
    import pytest

    from frozenaug.builder.write import shards
    from frozenaug.common import disk
    from frozenaug.common.errors import InputError

    coarse = np.random.default_rng(0).integers(0, 256, (64, 4, 4, 3)).astype(np.float32)
    images = np.stack([cv2.resize(c, (48, 48)) for c in coarse]).astype(np.uint8)
    labels = np.arange(64) % 3
    ref = write_shard(tmp_path / "ref.h5", images, labels, np.arange(64), class_names=CLASSES,
                      split="train", shard_index=0, epoch=0, encoding="jpeg:90")
    size = (tmp_path / "ref.h5").stat().st_size
    from frozenaug.format.codec import encode_images

    per_image = -(-len(encode_images(images, "jpeg:90")[0]) // 64)
    free = shards.shard_bytes_estimate(64, images.shape[1:], 3, False, per_image)
    assert size < free < shards.shard_bytes_estimate(64, images.shape[1:], 3, False)
    monkeypatch.setattr(disk, "free_bytes", lambda folder: free)
    with pytest.raises(InputError, match="not enough disk space"):
        _write(tmp_path / "raw.h5", images, labels)
    assert write_shard(tmp_path / "jpeg.h5", images, labels, np.arange(64), class_names=CLASSES,
                       split="train", shard_index=0, epoch=0, encoding="jpeg:90"
                       ).sha256 == ref.sha256
