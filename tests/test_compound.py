"""The compound suite: per-image compositions, seeded by image, held-out families held out."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import cell_pictures

from frozenaug.trainer.assess import compound as cmod
from frozenaug.trainer.assess.compound import SUITE, breakdown, compound, recipe
from frozenaug.trainer.assess.distort import FAMILIES
from frozenaug.trainer.assess.heldout import HELD_OUT, TRAINING_EQUIVALENTS

POLICIES = Path(__file__).resolve().parents[1] / "policies"


@pytest.fixture(scope="module")
def cells() -> np.ndarray:
    return cell_pictures(10)


def test_every_recipe_has_2_to_5_distinct_families_at_severity_3_to_5():
    recipes = [recipe(7, i) for i in range(600)]
    for r in recipes:
        assert 2 <= len(r.families) <= 5 and len(set(r.families)) == len(r.families)
        assert len(r.severities) == len(r.families)
        assert set(r.families) <= set(SUITE) and set(r.severities) <= {3, 4, 5}
    # the whole range is drawn: every count, family, severity, and both orders of a pair
    assert set(Counter(len(r.families) for r in recipes)) == {2, 3, 4, 5}
    assert {f for r in recipes for f in r.families} == set(SUITE)
    assert {s for r in recipes for s in r.severities} == {3, 4, 5}
    pairs = {r.families[:2] for r in recipes}
    assert ("blur", "noise") in pairs and ("noise", "blur") in pairs
    assert recipe(7, 3) == recipe(7, 3) and [recipe(8, i) for i in range(50)] != recipes[:50]


def test_each_image_is_damaged_by_its_own_draw_whatever_the_batch(cells):
    whole, recipes = compound(cells, seed=3)
    assert whole.shape == cells.shape and whole.dtype == np.uint8
    assert recipes == [recipe(3, i) for i in range(len(cells))]
    pieces = [compound(cells[a:b], seed=3, start=a)[0] for a, b in ((0, 1), (1, 4), (4, 10))]
    np.testing.assert_array_equal(np.concatenate(pieces), whole)  # batch size does not matter
    # the draw belongs to (seed, index), not to the pixels: the same picture at another index
    # gets other damage, and another seed changes the set
    same = compound(np.repeat(cells[:1], 4, axis=0), seed=3)[0]
    assert len({x.tobytes() for x in same}) == 4
    assert not np.array_equal(compound(cells, seed=4)[0], whole)
    assert all(not np.array_equal(a, b) for a, b in zip(whole, cells, strict=True))
    assert compound(cells[:0])[0].shape == (0, 48, 48, 3)
    with pytest.raises(ValueError, match="uint8"):
        compound(cells.astype(np.float32))


def test_families_run_in_the_drawn_order_at_the_drawn_severity(cells, monkeypatch):
    calls: list[tuple[int, str, int]] = []
    for name in SUITE:
        def fake(x, s, rng, name=name):
            calls.append((len(x), name, s))
            return np.clip(x.astype(int) * 2 + 1, 0, 255).astype(np.uint8) if (
                name == "blur") else x // 2
        monkeypatch.setitem(SUITE, name, fake)
    out, recipes = compound(cells[:6], seed=11)
    want = [(1, f, s) for r in recipes for f, s in zip(r.families, r.severities, strict=True)]
    assert calls == want  # one image at a time, each family once, in order
    for img, got, r in zip(cells[:6], out, recipes, strict=True):  # order matters to pixels
        y = img.astype(int)
        for f in r.families:
            y = np.clip(y * 2 + 1, 0, 255) if f == "blur" else y // 2
        np.testing.assert_array_equal(got, y)


def _classes(node) -> set[str]:
    if isinstance(node, dict):
        own = {str(node["__class_fullname__"])} if "__class_fullname__" in node else set()
        return own.union(*(_classes(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_classes(v) for v in node))
    return set()


def test_held_out_families_are_in_the_suite_and_in_no_training_preset():
    assert set(HELD_OUT) <= set(SUITE) and set(cmod.HELD_OUT_NAMES) == set(HELD_OUT)
    assert not set(HELD_OUT) & set(FAMILIES)  # not a family the builder can train on
    assert set(TRAINING_EQUIVALENTS) == set(HELD_OUT)
    presets = sorted(POLICIES.glob("*.yaml"))
    assert {p.stem for p in presets} >= {"none", "light", "heavy"}
    used = set().union(*(_classes(yaml.safe_load(p.read_text())) for p in presets))
    assert "GaussianBlur" in used  # the walk finds the transforms
    for family, names in TRAINING_EQUIVALENTS.items():
        assert not used & set(names), family
    assert cmod.label("optics") == "optics*" and cmod.label("blur") == "blur"


@pytest.mark.parametrize("family", sorted(HELD_OUT))
def test_held_out_family_changes_images_grows_and_is_seeded(cells, family):
    fn = HELD_OUT[family]
    a = fn(cells, 3, np.random.default_rng(1))
    assert a.shape == cells.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, fn(cells, 3, np.random.default_rng(1)))
    assert not np.array_equal(a, fn(cells, 3, np.random.default_rng(2)))
    assert all(not np.array_equal(a[i], cells[i]) for i in range(len(cells)))
    diff = [np.abs(fn(cells, s, np.random.default_rng(1)).astype(int) - cells).mean()
            for s in range(1, 6)]
    assert diff == sorted(diff) and diff[-1] > 2 * diff[0], diff


def test_illumination_varies_across_the_image(cells):
    flat = np.full((20, 48, 48, 3), 160, np.uint8)
    out = HELD_OUT["illumination"](flat, 5, np.random.default_rng(0)).astype(float)
    spread = out.reshape(20, -1, 3).std(axis=1).mean(axis=1)
    assert (spread > 3).all()  # a gain field, not one global gain


def test_breakdown_by_hand():
    r = [cmod.Recipe(("blur", "noise"), (3, 3)), cmod.Recipe(("noise", "optics", "colour"),
                                                              (4, 5, 3)),
         cmod.Recipe(("geometric", "blur"), (5, 5))]
    b = breakdown(np.array([True, False, True]), r)
    assert b["with"]["blur"] == {"accuracy": 1.0, "images": 2}
    assert b["with"]["noise"] == {"accuracy": 0.5, "images": 2}
    assert b["with"]["optics"] == {"accuracy": 0.0, "images": 1}
    assert b["with"]["occlusion"] == {"accuracy": 0.0, "images": 0}
    assert b["by_count"]["2"] == {"accuracy": 1.0, "images": 2}
    assert b["by_count"]["3"]["images"] == 1 and b["by_count"]["5"]["images"] == 0
