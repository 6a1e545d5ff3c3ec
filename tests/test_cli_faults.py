"""Hostile input through the installed console scripts, run as a user runs them (subprocesses).

Each case gets a fresh folder holding copies of the inputs it needs and runs one command there.
The promise checked for every case: exit code 2, exactly one line on stderr (``frozenaug-...:
error: ...``, naming the file or flag), no traceback, and the folder afterwards holds exactly
the same files with the same bytes (nothing left behind, the input untouched). In-process tests
(tests/test_faults.py) cannot see what a real process prints (TensorFlow's start-up logging) or
whether it exits; these can. The cases run in a small thread pool, once per module; the table of
kinds is docs/FAULTS.md. Case names start with the kind: ``loss`` (data loss), ``crash``,
``hang``, ``trace`` (once a traceback), ``intake``, ``path`` (a file for a folder and the
reverse), ``num`` (numeric flags and config keys at their limits), ``tamper`` (files a command
reads, truncated or altered), ``full`` (a full disk, a real tmpfs).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from cases_cli import CASES, FULL_CASES
from cases_cli_inputs3 import INPUT_CASES
from cases_cli_runs3 import register

CASES = {**CASES, **INPUT_CASES}  # round 3, the input side (docs/FAULTS.md)
register(CASES, FULL_CASES)  # round 3: runs, processes, outputs

BIN = Path(sys.executable).parent
ENV = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user has it
ENV["NO_ALBUMENTATIONS_UPDATE"] = "1"
N, SIZE = 24, 16
TIMEOUT_S = 180  # a hang fails the case instead of the suite


def _script(tool: str) -> str:
    return str(BIN / tool)


def _run(tool: str, argv: list, cwd: Path, env: dict | None = None
         ) -> subprocess.CompletedProcess:
    return subprocess.run([_script(tool), *map(str, argv)], cwd=cwd, env={**ENV, **(env or {})},
                          capture_output=True, text=True, timeout=TIMEOUT_S)


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` (hidden ones too) with its sha256, or "dir"."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root)] = "dir"
        for name in filenames:
            p = os.path.join(dirpath, name)
            if os.path.islink(p) or not os.path.isfile(p):  # a FIFO is never opened
                out[os.path.relpath(p, root)] = "link" if os.path.islink(p) else "special"
                continue
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = hashlib.file_digest(f, "sha256").hexdigest()
    return out


# --- the world every case copies from ------------------------------------------------------


def _images(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (n, 4, 4, 3)).astype(np.float32)
    return np.stack([cv2.resize(c, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
                     for c in coarse]).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """data.npz (3 classes), folders/ (2 classes), build/ (of data.npz), onebuild/ (one class,
    written with the build's own code, the refusal skipped), run/ (one epoch of simple_cnn)."""
    w = tmp_path_factory.mktemp("world")
    images = _images(N)
    np.savez(w / "data.npz", images=images, labels=np.arange(N) % 3,
             class_names=np.array(["a", "b", "c"]))
    for c, name in enumerate("ab"):
        (w / "folders" / name).mkdir(parents=True)
        for i in range(8):
            cv2.imwrite(str(w / "folders" / name / f"{i}.png"), images[c * 8 + i])
    common = ["--size", SIZE, "--epochs", "1", "--policy", "none", "--jobs", "1", "--no-clean"]
    p = _run("frozenaug-build", ["build", "data.npz", "--out", "build", *common], w)
    assert p.returncode == 0, p.stderr
    from frozenaug.builder.cli import main as build_main
    from frozenaug.builder.write import build as build_mod

    np.savez(w / "one.npz", images=images[:12], labels=np.zeros(12, np.int64))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(build_mod, "preflight", lambda *a, **k: None)
        assert build_main([str(a) for a in ["build", w / "one.npz", "--out", w / "onebuild",
                                            *common]]) == 0
    p = _run("frozenaug-train", ["fit", "build", "--out", "run", *FIT], w)
    assert p.returncode == 0, p.stderr
    return w


FIT = ["--model", "simple_cnn", "--weights", "none", "--epochs-coarse", "1", "--epochs-fine",
       "0", "--batch-size", "8"]


# --- running the cases ---------------------------------------------------------------------


def _case(name: str, make: Callable, world: Path, root: Path) -> dict:
    d = root / name
    d.mkdir()
    tool, argv, words, *env = make(d, world)  # a fourth item: environment variables
    before = snapshot(d)
    p = _run(tool, argv, d, *env)
    return {"tool": tool, "argv": argv, "words": words, "code": p.returncode,
            "err": p.stderr, "before": before, "after": snapshot(d)}


def _full_case(name: str, make: Callable, world: Path, root: Path) -> dict:
    """The command writes into ``full/``, a tiny tmpfs mounted in a private mount namespace
    that ends with it; what is left there is listed from inside."""
    d = root / name
    (d / "full").mkdir(parents=True)
    tool, argv, words, size = make(d, world)
    before = snapshot(d)
    cmd = " ".join(f"'{a}'" for a in [_script(tool), *map(str, argv)])
    script = (f"mount -t tmpfs -o size={size} none full || exit 99; {cmd}; rc=$?; "
              "echo LEFT:$(ls -A full); exit $rc")
    p = subprocess.run([*UNSHARE, "sh", "-c", script], cwd=d, env=ENV, capture_output=True,
                       text=True, timeout=TIMEOUT_S)
    left = [line for line in p.stdout.splitlines() if line.startswith("LEFT:")]
    return {"tool": tool, "argv": argv, "words": words, "code": p.returncode, "err": p.stderr,
            "before": before, "after": snapshot(d), "left": left}


UNSHARE = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]


def _can_mount(tmp: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    (tmp / "probe").mkdir(exist_ok=True)
    p = subprocess.run([*UNSHARE, "sh", "-c", "mount -t tmpfs -o size=64k none probe"],
                       cwd=tmp, capture_output=True)
    return p.returncode == 0


@pytest.fixture(scope="module")
def results(world, tmp_path_factory, request) -> dict[str, dict]:
    """Runs the selected cases (all, or those ``-k`` picked) in parallel, once."""
    root = tmp_path_factory.mktemp("cases")
    picked = {item.callspec.params["name"] for item in request.session.items
              if getattr(item, "callspec", None) and "name" in item.callspec.params}
    jobs = [(_case, n, m) for n, m in CASES.items() if n in picked]
    if _can_mount(root):
        jobs += [(_full_case, n, m) for n, m in FULL_CASES.items() if n in picked]
    with ThreadPoolExecutor(max_workers=3) as ex:
        futures = {n: ex.submit(run, n, m, world, root) for run, n, m in jobs}
    return {n: f.result() for n, f in futures.items()}


@pytest.mark.parametrize("name", sorted([*CASES, *FULL_CASES]))
def test_one_line_exit_2_nothing_left_input_untouched(name: str, results: dict) -> None:
    if name not in results:
        pytest.skip("cannot mount a tmpfs here (needs unshare -m)")
    r = results[name]
    lines = r["err"].strip().splitlines()
    shown = f"{r['tool']} {' '.join(map(str, r['argv']))}\n{r['err']}"
    assert "Traceback" not in r["err"], shown
    assert r["code"] == 2, shown
    assert len(lines) == 1 and lines[0].startswith(f"{r['tool']}: error: "), shown
    for word in r["words"]:
        assert word in lines[0], shown
    assert r["after"] == r["before"], shown  # nothing new, nothing changed, nothing removed
    if "left" in r:
        assert r["left"] == ["LEFT:"], shown


def test_suite_size() -> None:
    """The campaign asked for at least 150 cases."""
    assert len(CASES) + len(FULL_CASES) >= 150


# --- what must succeed ---------------------------------------------------------------------


def test_non_utf8_class_folder_scans_and_builds(world, tmp_path) -> None:
    """A class folder named with bytes that are not UTF-8 once segfaulted the contact sheet."""
    root = tmp_path / "data"
    for name in (b"a", b"\xff"):
        os.makedirs(os.path.join(os.fsencode(root), name))
    for i, f in enumerate(sorted((world / "folders" / "a").iterdir())):
        shutil.copy(f, os.path.join(os.fsencode(root), b"a", f"{i}.png".encode()))
        shutil.copy(world / "folders" / "b" / f.name,
                    os.path.join(os.fsencode(root), b"\xff", f"{i}.png".encode()))
    shutil.copy(world / "folders" / "a" / "0.png",  # a label conflict: names get drawn
                os.path.join(os.fsencode(root), b"\xff", b"dup.png"))
    p = _run("frozenaug-build", ["scan", "data", "--out", "scan", "--size", SIZE], tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "scan" / "scan.png").is_file()
    assert json.loads((tmp_path / "scan" / "scan.json").read_text())["removed_count"] == 2
    p = _run("frozenaug-build", ["build", "data", "--out", "b", "--size", SIZE, "--epochs", "1",
                                 "--policy", "none", "--jobs", "1"], tmp_path)
    assert p.returncode == 0, p.stderr


def test_refused_policy_leaves_nothing_so_the_corrected_command_runs(world, tmp_path) -> None:
    (tmp_path / "crop.yaml").write_text(
        "name: crop\nmix: null\ntransform:\n  __class_fullname__: Compose\n  p: 1.0\n"
        "  transforms:\n  - {__class_fullname__: RandomCrop, height: 64, width: 64, p: 1.0}\n")
    shutil.copy(world / "data.npz", tmp_path)
    argv = ["build", "data.npz", "--out", "b", "--size", SIZE, "--epochs", "1", "--jobs", "1"]
    p = _run("frozenaug-build", [*argv, "--policy", "crop.yaml"], tmp_path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "crop.yaml" in p.stderr, p.stderr
    assert not (tmp_path / "b").exists()
    p = _run("frozenaug-build", [*argv, "--policy", "none"], tmp_path)
    assert p.returncode == 0, p.stderr


def test_evaluate_accepts_an_npz_that_lacks_a_class(world, tmp_path) -> None:
    images = np.load(world / "data.npz")["images"]
    np.savez(tmp_path / "two.npz", images=images[:8], labels=np.arange(8) % 2)  # no class 2
    p = _run("frozenaug-train", ["evaluate", world / "run", "two.npz", "--out", "ev"], tmp_path)
    assert p.returncode == 0, p.stderr
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["samples"] == 8 and m["per_class"]["c"]["support"] == 0
    assert (tmp_path / "ev" / "confusion.png").is_file()


def test_forged_headers_really_claim_the_size(tmp_path) -> None:
    """The crash_header_* cases test something: numpy would believe this header."""
    from cases_cli import forged_npz

    p = forged_npz(tmp_path, "f.npz", images=(10**12, SIZE, SIZE, 3))
    with zipfile.ZipFile(p) as z, z.open("images.npy") as f:
        version = np.lib.format.read_magic(f)
        assert np.lib.format._read_array_header(f, version)[0][0] == 10**12
