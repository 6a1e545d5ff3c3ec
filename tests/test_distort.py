"""The distortion suite: every family changes images, grows with severity, is deterministic."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import cell_pictures

from frozenaug.imaging.stain import HED_FROM_RGB, OD_LUT, RGB_FROM_HED, stain_matrices
from frozenaug.trainer.assess.distort import FAMILIES, MAX_SEVERITY, distort

EXPECTED = ("geometric", "blur", "compression", "colour", "noise", "occlusion")


@pytest.fixture(scope="module")
def cells() -> np.ndarray:
    return cell_pictures(12)


def test_family_names_are_the_builders():
    from frozenaug.builder.augment.policy import FAMILY_NAMES

    assert tuple(FAMILIES) == EXPECTED == FAMILY_NAMES
    for fn in FAMILIES.values():
        assert fn.__doc__ and "s" in fn.__doc__


@pytest.mark.parametrize("family", EXPECTED)
def test_family_changes_images_and_is_deterministic(cells, family):
    a = distort(cells, family, 3, seed=1)
    assert a.shape == cells.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, distort(cells, family, 3, seed=1))
    changed = [not np.array_equal(a[i], cells[i]) for i in range(len(cells))]
    assert all(changed), family
    assert not np.array_equal(a, distort(cells, family, 3, seed=2))
    twice = distort(np.concatenate([cells, cells]), family, 3, seed=1)
    assert not np.array_equal(twice[:12], twice[12:])  # each image draws its own damage
    diff = [np.abs(distort(cells, family, s, 1).astype(int) - cells).mean()
            for s in range(1, MAX_SEVERITY + 1)]
    assert diff[-1] > diff[0] and diff[2] > diff[0], (family, diff)
    assert cells.flags.writeable and distort(cells[:0], family, 1).shape == (0, 48, 48, 3)


def test_other_families_unchanged_by_a_new_family(cells):
    # seeded by name, not position: the same images whatever FAMILIES holds around it
    a = distort(cells, "noise", 2, seed=5)
    saved = dict(FAMILIES)
    try:
        FAMILIES.clear()
        FAMILIES["noise"] = saved["noise"]
        np.testing.assert_array_equal(a, distort(cells, "noise", 2, seed=5))
    finally:
        FAMILIES.clear()
        FAMILIES.update(saved)


def test_stain_matrices_match_the_ruifrok_round_trip():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (4, 10, 3))
    scale, shift = rng.uniform(0.7, 1.3, (4, 3)), rng.uniform(-0.2, 0.2, (4, 3))
    od = OD_LUT[rgb].astype(np.float64)
    hed = od @ HED_FROM_RGB  # the textbook route: OD -> stains -> jitter -> OD
    expected = (hed * scale[:, None] + shift[:, None]) @ RGB_FROM_HED
    a, b = stain_matrices(scale, shift)
    np.testing.assert_allclose(od @ a + b, expected, rtol=1e-5, atol=1e-5)
    a, b = stain_matrices(np.ones((1, 3)), np.zeros((1, 3)))
    np.testing.assert_allclose(a[0], np.eye(3), atol=1e-6)  # identity jitter: no change


def test_bad_arguments(cells):
    with pytest.raises(ValueError, match="unknown distortion"):
        distort(cells, "jpeg", 1)
    with pytest.raises(ValueError, match="severity"):
        distort(cells, "blur", MAX_SEVERITY + 1)
    with pytest.raises(ValueError, match="uint8"):
        distort(cells.astype(np.float32), "blur", 1)
