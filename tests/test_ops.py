import os
import random

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from frozenaug.builder.augment import ops  # noqa: E402


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A cell-like picture: smooth gradients, a dark blob, mild noise, not full range."""
    yy, xx = np.mgrid[0:48, 0:40].astype(np.float32)
    img = np.stack([60 + 2 * xx, 80 + 2 * yy, 150 - xx - yy], axis=-1)
    img[(yy - 24) ** 2 + (xx - 20) ** 2 < 100] *= 0.5
    img += np.random.default_rng(0).normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", sorted(ops.OPS))
@pytest.mark.parametrize("level", [1.0, -1.0, 0.4])
@pytest.mark.parametrize("fill", [None, 0])
def test_op_keeps_shape_and_dtype(image, name, level, fill):
    out = ops.OPS[name](image, level, fill)
    assert out.shape == image.shape and out.dtype == np.uint8 and out.flags.c_contiguous
    if name != "identity":
        assert not np.array_equal(out, image), name
    assert out is not image


def test_translate_is_an_exact_shift(image):
    d = round(0.5 * ops.MAX_TRANSLATE * image.shape[1])
    out = ops.translate_x(image, 0.5, 0)
    assert np.array_equal(out[:, d:], image[:, :-d]) and not out[:, :d].any()
    out = ops.translate_y(image, -0.5, 7)
    dy = round(0.5 * ops.MAX_TRANSLATE * image.shape[0])
    assert np.array_equal(out[:-dy], image[dy:]) and (out[-dy:] == 7).all()


def test_tonal_ops_do_what_they_say(image):
    assert np.array_equal(ops.posterize(image, 1.0), image & 0xF0)
    assert np.array_equal(ops.solarize(image, 1.0), 255 - image)  # threshold 0: all inverted
    ac = ops.autocontrast(image, 0.0)
    assert (ac.reshape(-1, 3).min(0) == 0).all() and (ac.reshape(-1, 3).max(0) == 255).all()
    assert ops.brightness(image, -1.0).mean() < 0.2 * image.mean()
    assert ops.color(image, -1.0).std(axis=-1).mean() < 0.2 * image.std(axis=-1).mean()
    assert np.array_equal(ops.rotate(image, 0.0), image)


def _seeded(t: A.BasicTransform, seed: int) -> A.BasicTransform:
    t.set_random_seed(seed)
    return t


@pytest.mark.parametrize("make", [
    lambda: ops.RandAugment(n=3, magnitude=0.8),
    lambda: ops.AugMix(severity=5, width=3, depth=-1, alpha=1.0),
    lambda: ops.AugMix(severity=1, width=1, depth=2, alpha=0.5, ops=["rotate", "equalize"], fill=0),
])
def test_custom_transforms(image, make):
    t = _seeded(make(), 1)
    outs = [t(image=image)["image"] for _ in range(5)]
    for out in outs:
        assert out.shape == image.shape and out.dtype == np.uint8
    assert sum(not np.array_equal(o, image) for o in outs) >= 4
    assert len({o.tobytes() for o in outs}) >= 4  # random per call

    # same seed, same outputs, whatever the global random state
    random.seed(99)
    np.random.seed(99)
    again = _seeded(make(), 1)
    assert all(np.array_equal(a, again(image=image)["image"]) for a in outs)

    # serialises through albumentations and comes back equal and equally seeded
    d = A.to_dict(t)
    assert d["transform"]["__class_fullname__"].startswith("builder.ops.")
    back = A.from_dict(d)
    assert A.to_dict(back) == d
    back.set_random_seed(1)
    assert np.array_equal(back(image=image)["image"], outs[0])


def test_magnitude_zero_is_identity_for_geometric_ops(image):
    t = _seeded(ops.RandAugment(n=2, magnitude=0.0, ops=["rotate", "shear_x", "translate_y"]), 0)
    assert np.array_equal(t(image=image)["image"], image)


@pytest.mark.parametrize("make", [
    lambda: ops.RandAugment(n=-1),
    lambda: ops.RandAugment(magnitude=1.5),
    lambda: ops.RandAugment(ops=["rotate", "warp"]),
    lambda: ops.RandAugment(ops=[]),
    lambda: ops.RandAugment(fill=300),
    lambda: ops.AugMix(severity=0),
    lambda: ops.AugMix(width=0),
    lambda: ops.AugMix(depth=0),
    lambda: ops.AugMix(alpha=0),
    lambda: ops.AugMix(p=2),
])
def test_invalid_arguments(make):
    with pytest.raises(ValueError):
        make()


def test_stain_jitter_matches_the_batched_stain_code_and_varies(image):
    from frozenaug.imaging.stain import apply_stain, stain_matrices

    t = ops.StainJitter(scale=0.3, shift=0.1, p=1.0)
    t.set_random_seed(0)
    params = t.get_params()
    out = t.apply(image, **params)
    a, b = stain_matrices(np.array([params["alpha"]]), np.array([params["beta"]]))
    ref = apply_stain(image[None], a, b)[0]
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - ref).max() <= 1 and not np.array_equal(out, image)
    same = t.apply(image, alpha=[1.0, 1.0, 1.0], beta=[0.0, 0.0, 0.0])
    assert np.abs(same.astype(int) - image).max() <= 1  # no jitter: the image back
    white = np.full((4, 4, 3), 255, np.uint8)  # no stain: scaling leaves it white
    assert (t.apply(white, alpha=[1.3, 0.7, 1.2], beta=[0.0] * 3) >= 254).all()
    with pytest.raises(ValueError, match="scale"):
        ops.StainJitter(scale=1.5)
