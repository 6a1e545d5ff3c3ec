"""The package as installed: one namespace, no stray top-level names, the import contract, and
builds and policy files written before the namespace still load, hash and resume alike."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from importcontract import lint_imports, stage

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}


@pytest.mark.slow
def test_wheel_installs_only_the_frozenaug_namespace(tmp_path: Path) -> None:
    # From a copy of the sources: an in-tree build/ left by an earlier build could hide a
    # package setup.cfg no longer lists.
    src = tmp_path / "src"
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        (src / name).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, src / name)
    for folder in ("frozenaug", "builder", "trainer"):
        shutil.copytree(ROOT / folder, src / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp_path), str(src)], check=True,
                   capture_output=True, env=ENV)
    (wheel,) = tmp_path.glob("frozenaug-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"frozenaug", next(t for t in tops if t.endswith(".dist-info"))}
    # every module of the checkout, at its installed path (a package missing from setup.cfg
    # would install the console scripts without it)
    for folder, prefix in (("frozenaug", "frozenaug"), ("builder", "frozenaug/builder"),
                           ("trainer", "frozenaug/trainer")):
        for src in (ROOT / folder).rglob("*.py"):
            rel = src.relative_to(ROOT / folder).as_posix()
            assert f"{prefix}/{rel}" in names, f"{prefix}/{rel} is not in the wheel"
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt")))
    assert b"frozenaug-build = frozenaug.builder.cli:main" in entry
    assert b"frozenaug-train = frozenaug.trainer.cli:main" in entry


@pytest.mark.parametrize("name", ["builder", "trainer"])
def test_no_top_level_builder_or_trainer(name: str, tmp_path: Path) -> None:
    """Outside the checkout the names are free; inside it (the folder on sys.path) importing
    one refuses, so no module is ever loaded twice under two names."""
    outside = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=tmp_path,
                             capture_output=True, text=True, env=ENV)
    assert outside.returncode == 1 and "ModuleNotFoundError" in outside.stderr
    inside = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT,
                            capture_output=True, text=True, env=ENV)
    assert inside.returncode == 1
    assert f"this folder is the package frozenaug.{name}; import that" in inside.stderr
    ok = subprocess.run([sys.executable, "-c", f"import frozenaug.{name}.cli"], cwd=ROOT,
                        capture_output=True, text=True, env=ENV)
    assert ok.returncode == 0, ok.stderr


def test_import_frozenaug_loads_neither_tensorflow_nor_h5py() -> None:
    code = ("import sys, frozenaug; print(frozenaug.__version__, "
            "sorted(m for m in ('tensorflow', 'keras', 'h5py', 'cv2') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert p.stdout.split() == ["0.1.0", "[]"], p.stderr


@pytest.mark.slow
def test_import_contract_holds_and_catches_a_trainer_importing_the_builder(
        tmp_path: Path) -> None:
    stage(tmp_path / "ok")
    p = lint_imports(tmp_path / "ok")
    assert p.returncode == 0, p.stdout[-2000:]
    assert "2 kept, 0 broken" in p.stdout
    pkg = stage(tmp_path / "bad")
    target = pkg / "trainer" / "assess" / "distort.py"
    target.write_text(target.read_text() + "\nfrom frozenaug.builder.augment import ops  # noqa\n")
    p = lint_imports(tmp_path / "bad")
    assert p.returncode != 0
    assert "frozenaug.trainer.assess.distort -> frozenaug.builder.augment.ops" in p.stdout


# Written by the code before the frozenaug namespace (commit aa34a54), OpenCV 5.1.0, numpy
# 2.2.6, albumentations 2.0.8, h5py 3.14.0: the heavy preset's hash (the mixing heavy preset,
# heavy-mix since 2026-12-07) and the sha256 of every shard of the build in
# the test below, in manifest order, hashed together.
HEAVY_POLICY_HASH = "a30680404ea8b95388924898261f864a9ceece529cb5c021e0103d2c799b8b4b"
OLD_SHARDS_SHA = "e43d1313de5ec49e638d559c6d0677d81f6363fe2179fd757e6d922146fef848"
OLD_VERSIONS = {"cv2": "5.1.0", "numpy": "2.2.6", "albumentations": "2.0.8"}


def test_policy_files_naming_builder_ops_load_with_their_old_hash(tmp_path: Path) -> None:
    from frozenaug.builder.augment.policy import load_policy

    (tmp_path / "mine.yaml").write_text(_old_heavy_file())
    assert "builder.ops.RandAugment" in _old_heavy_file()
    assert "frozenaug.builder" not in _old_heavy_file()
    assert load_policy(str(tmp_path / "mine.yaml")).hash == HEAVY_POLICY_HASH


def _old_heavy_file() -> str:
    # The heavy preset had the mix stage until 2026-12-07; it is heavy-mix now, by that name.
    text = (ROOT / "policies" / "heavy-mix.yaml").read_text()
    return text.replace("'heavy-mix'", "'heavy'").replace("name: heavy-mix\n", "name: heavy\n")


@pytest.mark.slow
def test_a_build_written_before_the_namespace_is_reproduced_byte_for_byte(
        tmp_path: Path) -> None:
    import albumentations
    import cv2

    got = {"cv2": cv2.__version__, "numpy": np.__version__,
           "albumentations": albumentations.__version__}
    if got != OLD_VERSIONS:
        pytest.skip(f"pixels depend on the library versions: recorded {OLD_VERSIONS}, have {got}")
    rng = np.random.default_rng(7)
    np.savez(tmp_path / "in.npz", images=rng.integers(0, 256, (30, 16, 16, 3), dtype=np.uint8),
             labels=np.arange(30) % 3)
    (tmp_path / "heavy.yaml").write_text(_old_heavy_file())
    p = subprocess.run([str(Path(sys.executable).parent / "frozenaug-build"), "build", "in.npz",
                        "--out", "b", "--size", "16", "--epochs", "2", "--policy", "heavy.yaml",
                        "--seed", "3", "--jobs", "2", "--shard-size", "8"], cwd=tmp_path,
                       capture_output=True, text=True, env=ENV)
    assert p.returncode == 0, p.stderr
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["policy_hash"] == HEAVY_POLICY_HASH
    joined = "".join(s["sha256"] for s in m["shards"]).encode()
    assert hashlib.sha256(joined).hexdigest() == OLD_SHARDS_SHA


def test_trainer_turns_onednn_on_unless_the_user_set_it() -> None:
    """TensorFlow leaves its oneDNN kernels off on AMD CPUs (half the training speed there);
    importing the trainer turns them on before TensorFlow loads, and a user's 0 is kept."""
    code = "import os, frozenaug.trainer; print(os.environ['TF_ENABLE_ONEDNN_OPTS'])"
    env = {k: v for k, v in ENV.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    for given, expected in ((None, "1"), ("0", "0")):
        e = env if given is None else {**env, "TF_ENABLE_ONEDNN_OPTS": given}
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e)
        assert p.stdout.strip() == expected, p.stderr
