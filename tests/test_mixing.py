import numpy as np
import pytest

from frozenaug.imaging.mixing import MixConfig, cutmix_box, mix_batch


def constant_batch(n: int, h: int = 20, w: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Sample i is the constant image 10 * i + 5 with label i: pixels say where they came from."""
    values = 10 * np.arange(n) + 5
    images = np.broadcast_to(values[:, None, None, None], (n, h, w, 3)).astype(np.uint8)
    return images, np.arange(n)


def test_shapes_and_label_sums():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (32, 16, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, 5, 32)
    before = images.copy()
    out, soft = mix_batch(images, labels, 5, MixConfig(prob=0.8), seed=3)
    assert out.dtype == np.uint8 and out.shape == images.shape
    assert soft.dtype == np.float32 and soft.shape == (32, 5)
    assert np.allclose(soft.sum(1), 1.0, atol=1e-6) and (soft >= 0).all()
    assert not np.array_equal(out, images)
    assert np.array_equal(images, before)  # input untouched


def test_cutmix_label_mass_is_the_pasted_area():
    images, labels = constant_batch(24)
    out, soft = mix_batch(images, labels, 24, MixConfig(prob=1.0, cutmix_share=1.0), seed=7)
    h, w = images.shape[1:3]
    pasted_any = 0
    for i in range(24):
        own = out[i, ..., 0] == images[i, 0, 0, 0]
        pasted = (~own).sum() / (h * w)
        assert soft[i, i] == pytest.approx(1.0 - pasted, abs=1e-6)
        if pasted:
            pasted_any += 1
            (partner_value,) = set(np.unique(out[i][~own])) - {images[i, 0, 0, 0]}
            j = (int(partner_value) - 5) // 10
            assert j != i
            assert soft[i, j] == pytest.approx(pasted, abs=1e-6)
            assert np.count_nonzero(soft[i]) == 2
    assert pasted_any >= 20


def test_mixup_label_matches_blend():
    images, labels = constant_batch(24)
    out, soft = mix_batch(images, labels, 24, MixConfig(prob=1.0, cutmix_share=0.0), seed=1)
    for i in range(24):
        others = np.flatnonzero(soft[i] * (np.arange(24) != i))
        assert len(others) == 1
        j = others[0]
        expected = soft[i, i] * images[i, 0, 0, 0] + soft[i, j] * images[j, 0, 0, 0]
        assert abs(float(out[i, 0, 0, 0]) - expected) <= 0.51
        assert (out[i] == out[i, 0, 0, 0]).all()


def test_prob_zero_changes_nothing():
    images, labels = constant_batch(10)
    out, soft = mix_batch(images, labels % 4, 4, MixConfig(prob=0.0), seed=0)
    assert np.array_equal(out, images)
    assert np.array_equal(soft, np.eye(4, dtype=np.float32)[labels % 4])


def test_single_sample_has_no_partner():
    images, labels = constant_batch(1)
    out, soft = mix_batch(images, labels, 3, MixConfig(prob=1.0), seed=0)
    assert np.array_equal(out, images) and soft.tolist() == [[1.0, 0.0, 0.0]]


def test_deterministic_per_seed():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, 16)
    a = mix_batch(images, labels, 3, MixConfig(), seed=5)
    b = mix_batch(images, labels, 3, MixConfig(), seed=5)
    c = mix_batch(images, labels, 3, MixConfig(), seed=6)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_cutmix_box_is_clipped():
    assert cutmix_box(10, 10, 0.75, 0.0, 0.0) == (0, 3, 0, 3)  # 5x5 box centred on a corner
    y0, y1, x0, x1 = cutmix_box(10, 10, 0.75, 0.5, 0.5)
    assert (y1 - y0, x1 - x0) == (5, 5)
    y0, y1, _, _ = cutmix_box(10, 10, 1.0, 0.5, 0.5)
    assert y1 == y0  # lam 1: empty box


@pytest.mark.parametrize("kwargs", [
    {"mixup_alpha": 0}, {"cutmix_alpha": -1}, {"prob": 1.5}, {"cutmix_share": -0.1},
    {"prob": "0.5"}, {"prob": True}, {"mixup_alpha": float("nan")},
])
def test_invalid_config(kwargs):
    with pytest.raises(ValueError):
        MixConfig(**kwargs)


def test_config_dict_round_trip_and_unknown_keys():
    cfg = MixConfig(prob=0.3)
    assert MixConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="probb"):
        MixConfig.from_dict({"probb": 0.3})


def test_bad_labels():
    images, labels = constant_batch(4)
    with pytest.raises(ValueError):
        mix_batch(images, labels, 3, MixConfig(), seed=0)  # label 3 >= num_classes
