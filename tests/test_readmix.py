"""fit --mix fresh: MixUp/CutMix drawn anew for every batch while reading."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from build_factory import make_build

from frozenaug.common.errors import InputError
from frozenaug.imaging.mixing import MixConfig
from frozenaug.trainer.config import FitConfig
from frozenaug.trainer.read.readmix import fresh_mix
from frozenaug.trainer.train.fit import fit


def _batches(n_batches: int = 3, b: int = 8, c: int = 4) -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n_batches * b, 16, 16, 3), dtype=np.uint8)
    y = np.eye(c, dtype=np.float32)[np.arange(n_batches * b) % c]
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(b)


def _collect(ds: tf.data.Dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.numpy(), y.numpy()) for x, y in ds]


def test_fresh_mix_is_seeded_by_step_and_keeps_label_mass():
    cfg = MixConfig(prob=1.0)
    a = _collect(fresh_mix(_batches(), cfg, 4, seed=0))
    again = _collect(fresh_mix(_batches(), cfg, 4, seed=0))
    for (xa, ya), (xb, yb) in zip(a, again, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    plain = _collect(_batches())
    for (x, y), (x0, y0) in zip(a, plain, strict=True):
        assert x.shape == x0.shape and x.dtype == np.uint8
        np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-6)
        assert not np.array_equal(y, y0)  # every sample mixed at prob 1
    # Another epoch (later steps) draws other partners and ratios for the same images.
    later = _collect(fresh_mix(_batches(), cfg, 4, seed=0, first_step=3))
    assert not all(np.array_equal(y, z) for (_, y), (_, z) in zip(a, later, strict=True))
    # A resumed run starting at step 1 gets what the uninterrupted one got at step 1.
    resumed = _collect(fresh_mix(_batches().skip(1), cfg, 4, seed=0, first_step=1))
    np.testing.assert_array_equal(resumed[0][1], a[1][1])


def test_fit_mix_fresh_trains_and_refuses_a_build_that_froze_mixing(tmp_path):
    plain = make_build(tmp_path / "plain", n_per_class=4, num_classes=3, size=16)
    cfg = dict(model="simple_cnn", weights="none", epochs_coarse=1, epochs_fine=0,
               batch_size=4, head_units=[8], mix="fresh")
    out = fit(FitConfig(build_dir=str(plain), **cfg), tmp_path / "run", verbose=0, eager=True)
    assert out["epochs"] == 1 and (tmp_path / "run" / "model.keras").is_file()
    mixed = make_build(tmp_path / "mixed", n_per_class=4, num_classes=3, size=16,
                       soft_labels=True)
    with pytest.raises(InputError, match="froze them already"):
        fit(FitConfig(build_dir=str(mixed), **cfg), tmp_path / "run2", verbose=0, eager=True)
    assert not (tmp_path / "run2").exists()
