import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from frozenaug import format as fmt
from frozenaug.builder.cli import main
from frozenaug.builder.write.builddir import WORK

ROOT = Path(__file__).resolve().parents[1]
# 60 images of 32x32 in 3 classes; K=2 epochs of 16-image shards.
BASE = ["--size", "32", "--epochs", "2", "--shard-size", "16", "--seed", "3"]


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8)  # all distinct: none removed
    labels = (np.arange(60) % 3).astype(np.uint8).reshape(-1, 1)
    path = tmp_path / "tiny.npz"
    np.savez(path, images=images, labels=labels)
    return path


def build(inp: Path, out: Path, *extra: str) -> int:
    return main(["build", str(inp), "--out", str(out), *BASE, *extra])


def shard_bytes(out: Path) -> dict[str, bytes]:
    m = json.loads((out / fmt.MANIFEST_NAME).read_text())
    return {s["path"]: (out / s["path"]).read_bytes() for s in m["shards"]}


def test_jobs_do_not_change_bytes(tiny, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert build(tiny, a, "--jobs", "1") == 0
    assert build(tiny, b, "--jobs", "2") == 0
    assert (a / fmt.MANIFEST_NAME).read_bytes() == (b / fmt.MANIFEST_NAME).read_bytes()
    assert shard_bytes(a) == shard_bytes(b)
    assert not (a / WORK).exists()

    m = fmt.load_manifest(a)
    raw = m.raw
    assert "jobs" not in raw["config"] and raw["config"]["epochs"] == 2
    assert raw["input"]["num_samples"] == 60 and raw["policy"]["name"] == "heavy"
    sizes = [s.samples for s in m.shards_of("train", 0)]
    assert sizes[:-1] == [16] * (len(sizes) - 1) and 0 < sizes[-1] <= 16
    # Each frozen epoch holds every train row once, in its own order.
    orders = []
    for e in range(2):
        src = []
        for s in m.shards_of("train", e):
            with h5py.File(m.path_of(s), "r") as f:
                src += f[fmt.DS_SOURCE_INDEX][()].tolist()
                assert f.attrs[fmt.ATTR_POLICY_HASH] == raw["policy_hash"]
        orders.append(src)
    assert sorted(orders[0]) == sorted(orders[1]) and orders[0] != orders[1]
    assert len(orders[0]) == raw["split"]["counts"]["train"]
    # val and test are the input pixels, unaugmented.
    inputs = np.load(tiny)["images"]
    for split in ("val", "test"):
        for s in m.shards_of(split):
            with h5py.File(m.path_of(s), "r") as f:
                assert np.array_equal(f[fmt.DS_IMAGES][()], inputs[f[fmt.DS_SOURCE_INDEX][()]])
                assert fmt.DS_SOFT_LABELS not in f


def test_jobs_do_not_change_frozen_mixes(tiny, tmp_path):
    # heavy-mix: MixUp/CutMix draw partners within a shard, seeded by (seed, epoch, shard)
    a, b = tmp_path / "a", tmp_path / "b"
    assert build(tiny, a, "--jobs", "1", "--policy", "heavy-mix", "--finish", "none") == 0
    assert build(tiny, b, "--jobs", "2", "--policy", "heavy-mix", "--finish", "none") == 0
    assert shard_bytes(a) == shard_bytes(b)
    assert any(s.soft_labels for s in fmt.load_manifest(a).shards_of("train"))


def test_up_to_date_refusal_and_overwrite(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    assert build(tiny, out, "--jobs", "1", "--policy", "light") == 0
    manifest = (out / fmt.MANIFEST_NAME).read_bytes()
    assert not any(s["soft_labels"] for s in json.loads(manifest)["shards"])  # light: no mixing
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()

    assert build(tiny, out, "--jobs", "2", "--policy", "light") == 0  # jobs is not config
    assert "up to date" in capsys.readouterr().out
    assert (out / fmt.MANIFEST_NAME).read_bytes() == manifest

    assert build(tiny, out, "--policy", "light", "--epochs", "3") == 2
    err = capsys.readouterr().err
    assert "config.epochs" in err and "--overwrite" in err
    assert (out / fmt.MANIFEST_NAME).read_bytes() == manifest

    assert build(tiny, out, "--jobs", "1", "--policy", "light", "--epochs", "3",
                 "--overwrite") == 0
    assert fmt.load_manifest(out).epochs == 3
    assert (out / "notes.txt").read_text() == "mine"  # only the build's own files replaced


def test_refuses_foreign_nonempty_dir(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("x")
    assert build(tiny, out) == 2
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


def test_no_clean_and_missing_input(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    assert build(tiny, out, "--jobs", "1", "--no-clean", "--policy", "none") == 0
    raw = fmt.load_manifest(out).raw
    assert raw["scan"] is None and raw["config"]["clean"] is False
    assert sum(raw["split"]["counts"].values()) == 60
    assert build(tmp_path / "nope.npz", tmp_path / "o2") == 2


def test_late_input_error_leaves_no_plan(tiny, tmp_path, monkeypatch):
    import frozenaug.builder.write.build
    from frozenaug.common.errors import InputError

    def refuse(*a, **k):
        raise InputError("tiny.npz: refused late")

    out = tmp_path / "out"
    monkeypatch.setattr(frozenaug.builder.write.build, "clean_dataset", refuse)
    assert build(tiny, out, "--jobs", "1") == 2
    assert not out.exists()
    monkeypatch.undo()
    assert build(tiny, out, "--jobs", "1", "--epochs", "1") == 0  # another config is welcome


def _kill_after_first_shard(inp: Path, out: Path) -> None:
    """Run the CLI in a subprocess whose shard writes are slowed, SIGKILL it mid-build."""
    driver = (
        "import sys, time\n"
        "import frozenaug.builder.write.tasks as b\n"
        "real = b.write_shard\n"
        "def slow(*a, **k):\n"
        "    time.sleep(0.3)\n"
        "    return real(*a, **k)\n"
        "b.write_shard = slow\n"
        "from frozenaug.builder.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = ["build", str(inp), "--out", str(out), *BASE, "--jobs", "1"]
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.Popen([sys.executable, "-c", driver, *args], env=env, cwd=ROOT)
    done = out / WORK / "done"
    deadline = time.monotonic() + 60
    while not (done.is_dir() and list(done.glob("train__*.json"))):  # not a .tmp- file
        assert proc.poll() is None, "the build ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_killed_build_resumes_to_same_bytes(tiny, tmp_path, capsys):
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert build(tiny, ref, "--jobs", "1") == 0

    _kill_after_first_shard(tiny, out)
    assert not (out / fmt.MANIFEST_NAME).exists()
    assert list((out / WORK / "done").glob("train__*.json"))
    stale = out / "train" / "epoch-001" / ".tmp-shard-00000.h5.abc"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"half a shard")
    capsys.readouterr()

    assert build(tiny, out, "--jobs", "2") == 0
    assert "kept" in capsys.readouterr().out
    assert not stale.exists() and not (out / WORK).exists()
    assert (out / fmt.MANIFEST_NAME).read_bytes() == (ref / fmt.MANIFEST_NAME).read_bytes()
    assert shard_bytes(out) == shard_bytes(ref)


def test_lost_or_damaged_shard_is_rebuilt(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    assert build(tiny, out, "--jobs", "1") == 0
    manifest = (out / fmt.MANIFEST_NAME).read_bytes()
    before = shard_bytes(out)
    m = fmt.load_manifest(out)
    lost, damaged = m.path_of(m.shards[0]), m.path_of(m.shards[1])
    lost.unlink()
    # A damaged shard is kept only if its bytes match; here the missing one triggers the resume.
    damaged.write_bytes(damaged.read_bytes()[:-10] + b"0123456789")
    capsys.readouterr()
    assert build(tiny, out, "--jobs", "1") == 0
    out_text = capsys.readouterr().out
    assert f"kept {len(before) - 2} finished shards" in out_text
    assert (out / fmt.MANIFEST_NAME).read_bytes() == manifest
    assert shard_bytes(out) == before


def test_each_thread_has_its_own_augmenter():
    # An Augmenter reseeds itself per sample: a dask worker running two tasks at once in one
    # process must not share one, or the shards' bytes depend on thread timing.
    from concurrent.futures import ThreadPoolExecutor

    from frozenaug.builder.augment.policy import load_policy
    from frozenaug.builder.write.tasks import _augmenter

    policy = load_policy("light")
    assert _augmenter(policy) is _augmenter(policy)
    with ThreadPoolExecutor(1) as ex:
        other = ex.submit(_augmenter, policy).result()
    assert other is not _augmenter(policy) and other.policy.hash == policy.hash
