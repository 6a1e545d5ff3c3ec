import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from frozenaug.builder.augment import policy as P  # noqa: E402
from frozenaug.builder.augment.augmenter import Augmenter  # noqa: E402
from frozenaug.common import seeds as S  # noqa: E402
from frozenaug.common.errors import InputError  # noqa: E402
from frozenaug.imaging.mixing import MixConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.integers(40, 200, (1, 32, 32, 3)).astype(np.float32)
    return np.clip(base + rng.normal(0, 20, (12, 32, 32, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", P.PRESETS)
@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_save_load_round_trip(tmp_path, images, name, suffix):
    pol = P.preset(name)
    path = tmp_path / f"p{suffix}"
    P.save_policy(pol, path)
    back = P.load_policy(str(path))
    assert back.to_dict() == pol.to_dict() and back.hash == pol.hash and back.name == name
    seeds = [S.sample_seed(1, 0, i) for i in range(len(images))]
    a = Augmenter(pol).augment_batch(images, seeds)
    b = Augmenter(back).augment_batch(images, seeds)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("name", P.PRESETS)
def test_preset_files_match_code(name):
    path = REPO / "policies" / f"{name}.yaml"
    assert P.load_policy(str(path)).to_dict() == P.preset(name).to_dict()
    # albumentations itself still reads the file (our keys are ignored by A.load)
    t = A.load(str(path), data_format="yaml")
    expected = {k: v for k, v in P.preset(name).to_dict().items()
                if k in ("__version__", "transform")}
    assert json.loads(json.dumps(A.to_dict(t))) == expected


def test_presets_differ_and_behave(images):
    assert len({P.preset(n).hash for n in P.PRESETS}) == len(P.PRESETS)
    assert P.preset("heavy-mix").mix == MixConfig() and P.preset("light").mix is None
    assert P.preset("heavy").mix is None  # the recipe's default froze no MixUp/CutMix
    # heavy-mix is heavy plus the batch stage: the same per-sample views
    seeds = [S.sample_seed(0, 0, i) for i in range(len(images))]
    assert np.array_equal(Augmenter(P.preset("heavy")).augment_batch(images, seeds),
                          Augmenter(P.preset("heavy-mix")).augment_batch(images, seeds))
    none = Augmenter(P.preset("none")).augment_batch(images, range(len(images)))
    assert np.array_equal(none, images)
    heavy = Augmenter(P.preset("heavy"))
    outs = [heavy.augment(images[0], s) for s in range(8)]
    assert len({o.tobytes() for o in outs}) == 8


def test_determinism_across_histories(images):
    pol = P.preset("heavy")
    seed = S.sample_seed(3, 1, 5)
    fresh = Augmenter(pol).augment(images[0], seed)
    busy = Augmenter(pol)
    for i in range(1, len(images)):
        busy.augment(images[i], i * 7)
    other = Augmenter(pol)  # a second augmenter on the same policy, used in between
    other.augment(images[1], 123)
    assert np.array_equal(busy.augment(images[0], seed), fresh)
    assert np.array_equal(other.augment(images[0], seed), fresh)
    batch = busy.augment_batch(images[:3][::-1], [9, 8, seed])
    assert np.array_equal(batch[2], fresh)


def test_same_hash_and_output_in_another_process(images):
    pol = P.preset("heavy")
    out = Augmenter(pol).augment(images[0], 42)
    code = (
        "import sys, hashlib, numpy as np; from frozenaug.builder.augment import policy as P;"
        "from frozenaug.builder.augment.augmenter import Augmenter;"
        "img = np.frombuffer(sys.stdin.buffer.read(), np.uint8).reshape(32, 32, 3);"
        "p = P.load_policy('heavy');"
        "print(p.hash, hashlib.sha256(Augmenter(p).augment(img, 42).tobytes()).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123", "NO_ALBUMENTATIONS_UPDATE": "1"}
    res = subprocess.run([sys.executable, "-c", code], input=images[0].tobytes(),
                         capture_output=True, check=True, cwd=REPO, env=env)
    import hashlib

    assert res.stdout.decode().split() == [pol.hash, hashlib.sha256(out.tobytes()).hexdigest()]


def test_sample_and_batch_seeds():
    seeds = {S.sample_seed(0, e, i) for e in range(3) for i in range(100)}
    assert len(seeds) == 300 and all(0 <= s < 2**63 for s in seeds)
    assert S.sample_seed(0, 1, 2) == S.sample_seed(0, 1, 2) != S.sample_seed(1, 1, 2)
    assert S.batch_seed(0, 1, 2) != S.sample_seed(0, 1, 2)
    with pytest.raises(ValueError):
        S.sample_seed(2**64, 0, 0)


def test_mix_stage(images):
    labels = np.arange(len(images)) % 3
    imgs, soft = Augmenter(P.preset("light")).mix(images, labels, 3, seed=0)
    assert soft is None and imgs is images
    imgs, soft = Augmenter(P.preset("heavy")).mix(images, labels, 3, seed=0)
    assert soft is None and imgs is images
    imgs, soft = Augmenter(P.preset("heavy-mix")).mix(images, labels, 3, seed=0)
    assert soft.shape == (len(images), 3) and np.allclose(soft.sum(1), 1)


def _write(tmp_path: Path, content: object, name: str = "p.yaml") -> str:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def _light() -> dict:
    return P.preset("light").to_dict()


@pytest.mark.parametrize("make, message", [
    (lambda d: "transform: [unclosed", "unreadable"),
    (lambda d: ["a", "list"], "not a policy"),
    (lambda d: {**d, "extra": 1}, "unknown keys"),
    (lambda d: {**d, "mix": {"prob": 2}}, "bad mix"),
    (lambda d: {**d, "mix": {"probability": 0.5}}, "bad mix"),
    (lambda d: {**d, "mix": 0.5}, "bad mix"),
    (lambda d: {**d, "name": ""}, "name"),
    (lambda d: {**d, "transform": {**d["transform"], "transforms": [
        {"__class_fullname__": "NoSuchTransform", "p": 1.0}]}}, "unknown transform"),
    (lambda d: {**d, "transform": {**d["transform"], "transforms": [
        {"__class_fullname__": "HorizontalFlip", "p": 1.0, "probability": 1}]}}, "probability"),
    (lambda d: {**d, "transform": {**d["transform"], "transforms": [
        {"__class_fullname__": "builder.ops.RandAugment", "p": 1.0, "magnitude": 5}]}},
     "magnitude"),
    (lambda d: {**d, "transform": {**d["transform"], "transforms": [
        {"__class_fullname__": "Affine", "p": 1.0, "rotate": "lots"}]}}, "invalid transform"),
])
def test_invalid_policy_files(tmp_path, make, message):
    path = _write(tmp_path, make(_light()))
    with pytest.raises(InputError, match=message) as e:
        P.load_policy(path)
    assert path in str(e.value) and "\n" not in str(e.value)


def test_missing_file_and_bad_suffix(tmp_path):
    with pytest.raises(InputError, match="presets are"):
        P.load_policy(str(tmp_path / "nope.yaml"))
    with pytest.raises(InputError, match="must end in"):
        P.load_policy(_write(tmp_path, _light(), "p.txt"))
    with pytest.raises(InputError, match="must end in"):
        P.save_policy(P.preset("none"), tmp_path / "p.txt")


def test_json_and_bare_transform_files(tmp_path, images):
    d = _light()
    path = _write(tmp_path, json.dumps(d), "p.json")
    assert P.load_policy(path).hash == P.preset("light").hash
    # a plain A.save file (no name, no mix, one transform) is a valid policy too
    A.save(A.HorizontalFlip(p=1.0), tmp_path / "flip.yaml", data_format="yaml")
    pol = P.load_policy(str(tmp_path / "flip.yaml"))
    assert pol.name == "flip" and pol.mix is None
    assert np.array_equal(Augmenter(pol).augment(images[0], 0), images[0][:, ::-1])


def test_policy_that_changes_the_size_is_refused(tmp_path, images):
    d = yaml.safe_load(yaml.safe_dump(_light()))
    d["transform"]["transforms"] = [{"__class_fullname__": "RandomCrop", "p": 1.0,
                                     "height": 16, "width": 16}]
    pol = P.load_policy(_write(tmp_path, d))
    with pytest.raises(InputError, match="keep the image size"):
        Augmenter(pol).augment(images[0], 0)


# --- distortion families and leave-one-family-out ------------------------------------------


def test_heavy_covers_every_family_and_light_some():
    assert P.policy_families(P.preset("heavy")) == set(P.FAMILY_NAMES)
    assert P.policy_families(P.preset("light")) == {"geometric", "colour"}
    assert P.policy_families(P.preset("none")) == set()
    from frozenaug.builder.augment.families import unclassified

    for name in P.PRESETS:
        assert unclassified(A.to_dict(P.preset(name).transform)["transform"]) == []


@pytest.mark.parametrize("family", P.FAMILY_NAMES)
def test_without_family_removes_exactly_that_family(tmp_path, images, family):
    heavy = P.preset("heavy-mix")
    pol = P.without_family(heavy, family)
    assert pol.name == f"heavy-mix-no-{family}" and pol.mix == heavy.mix
    assert P.policy_families(pol) == set(P.FAMILY_NAMES) - {family}
    assert pol.hash != heavy.hash and P.preset("heavy-mix").hash == heavy.hash  # a copy
    # a valid policy file: saved, loaded and applied like any other
    P.save_policy(pol, tmp_path / "p.yaml")
    back = P.load_policy(str(tmp_path / "p.yaml"))
    assert back.hash == pol.hash
    out = Augmenter(back).augment_batch(images, range(len(images)))
    assert out.shape == images.shape
    assert P.load_policy("heavy-mix", drop_family=family).hash == pol.hash


def _classes(node: dict) -> list[str]:
    if "transforms" in node:
        return [node["__class_fullname__"]] + [c for t in node["transforms"]
                                               for c in _classes(t)]
    return [node["__class_fullname__"]]


def test_without_family_in_nested_composes_and_randaugment():
    from frozenaug.builder.augment import ops

    pol = P.Policy("custom", A.Compose([
        A.OneOf([A.GaussianBlur(p=1.0), A.MotionBlur(p=1.0)], p=0.5),  # left empty: removed
        A.SomeOf([A.GaussianBlur(p=1.0), A.ToGray(p=1.0), A.GaussNoise(p=1.0)], n=2, p=1.0),
        A.Sequential([A.OneOf([A.Defocus(p=1.0)], p=1.0), A.HorizontalFlip(p=1.0)], p=1.0),
        ops.RandAugment(n=2, magnitude=0.5, ops=["rotate", "sharpness", "color"], p=1.0),
        ops.AugMix(ops=["sharpness", "identity"], p=1.0),  # nothing but identity left
        A.CLAHE(p=0.1),
    ]), None)
    d = A.to_dict(P.without_family(pol, "blur").transform)["transform"]
    assert _classes(d) == ["Compose", "SomeOf", "ToGray", "GaussNoise", "Sequential",
                           "HorizontalFlip", "builder.ops.RandAugment", "CLAHE"]
    assert d["transforms"][0]["n"] == 2
    assert d["transforms"][2]["ops"] == ["rotate", "color"]
    geo = A.to_dict(P.without_family(pol, "geometric").transform)["transform"]
    assert geo["transforms"][3]["ops"] == ["sharpness", "color"]
    assert "HorizontalFlip" not in _classes(geo)
    d = A.to_dict(P.without_family(P.preset("light"), "geometric").transform)["transform"]
    assert _classes(d) == ["Compose", "ColorJitter"]
    empty = P.without_family(P.preset("none"), "noise")
    assert empty.name == "none-no-noise" and not empty.transform.transforms


def test_unknown_family_is_an_input_error():
    with pytest.raises(InputError, match="no such family.*geometric"):
        P.without_family(P.preset("heavy"), "jpeg")
    with pytest.raises(InputError, match="no such family"):
        P.load_policy("light", drop_family="fog")


def test_build_cli_drop_family(tmp_path):
    from frozenaug import format as fmt
    from frozenaug.builder.cli import build_parser, main
    from frozenaug.builder.config import load_build_config

    args = build_parser().parse_args(["build", "in.npz", "--out", "o", "--drop-family", "blur"])
    cfg = load_build_config(args)
    assert cfg.drop_family == "blur" and cfg.to_dict()["drop_family"] == "blur"
    # absent when unused, so a build made before --drop-family existed keeps its key
    assert "drop_family" not in load_build_config(
        build_parser().parse_args(["build", "in.npz", "--out", "o"])).to_dict()
    with pytest.raises(InputError, match="--drop-family: must be one of geometric"):
        load_build_config(build_parser().parse_args(
            ["build", "in.npz", "--out", "o", "--drop-family", "jpeg"]))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tiny.npz", images=rng.integers(0, 256, (30, 32, 32, 3), np.uint8),
             labels=(np.arange(30) % 3).astype(np.uint8).reshape(-1, 1))
    out = tmp_path / "b"
    assert main(["build", str(tmp_path / "tiny.npz"), "--out", str(out), "--epochs", "1",
                 "--jobs", "1", "--no-clean", "--policy", "light",
                 "--drop-family", "geometric"]) == 0
    raw = fmt.load_manifest(out).raw
    assert raw["policy"]["name"] == "light-no-geometric"
    assert P.policy_families(P.policy_from_dict(raw["policy"], "manifest")) == {"colour"}


@pytest.mark.parametrize("size", [16, 28, 96])
def test_presets_apply_at_every_supported_size(size):
    rng = np.random.default_rng(size)
    x = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    for name in P.PRESETS:
        aug = Augmenter(P.preset(name))
        for seed in range(60):  # enough draws to reach every OneOf branch
            assert aug.augment(x, seed).shape == x.shape
