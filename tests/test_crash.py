"""Crash safety and concurrency: SIGKILL a build or a fit at random points and finish it; one
build per directory at a time (frozenaug/common/lock.py); many readers of one build at once.

bench/crash.py runs the same kill-and-resume trial 20 times; here it runs three times.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from build_factory import make_build

from frozenaug import format as fmt
from frozenaug.builder.cli import main as build_main
from frozenaug.common.errors import InputError
from frozenaug.common.lock import LOCK_NAME, build_lock

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _bench():
    spec = importlib.util.spec_from_file_location("bench_crash", ROOT / "bench" / "crash.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_crash", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# --- build: kill at random points, run again, compare bytes --------------------------------


def test_killed_builds_finish_byte_identical(tmp_path):
    crash = _bench()
    inp = crash.make_input(tmp_path / "in.npz", 60)
    argv = crash.build_argv(inp, tmp_path / "ref", jobs=1)
    total = crash.run_to_end(argv)
    ref = crash.snapshot(tmp_path / "ref")
    rng = random.Random(7)
    for i in range(3):
        out = tmp_path / f"trial{i}"
        t = crash.trial(inp, out, ref, rng, total, len(ref) - 1, jobs=1)
        assert t.mismatches == [], (t.kills, t.mismatches)
        assert not (out / ".work").exists()


# --- fit: kill mid-run, --resume, compare with an uninterrupted run ------------------------


FIT = ["--model", "simple_cnn", "--weights", "none", "--epochs-coarse", "3", "--epochs-fine",
       "1", "--batch-size", "8", "--patience", "10", "--xla", "off"]


def _epoch_done(run: Path) -> int:
    try:
        return int(json.loads((run / "state.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return -1


def _rows(run: Path) -> list[dict[str, float | str]]:
    """history.csv by column name (the column order is not the point), numbers as floats."""
    with open(run / "history.csv") as f:
        return [{k: v if k == "phase" else float(v) for k, v in r.items()}
                for r in csv.DictReader(f)]


def _weights(run: Path) -> list:
    import keras

    return keras.saving.load_model(run / "model.keras", compile=False).get_weights()


@pytest.fixture(scope="module")
def killed_and_reference(tmp_path_factory) -> tuple[Path, Path, list[dict]]:
    """(a fit SIGKILLed just after its first epoch's checkpoint, then resumed; the same fit
    uninterrupted; the history state.json held at the kill)."""
    from frozenaug.trainer.cli import main as train_main

    tmp = tmp_path_factory.mktemp("fitkill")
    build = make_build(tmp / "build", n_per_class=6, num_classes=3, size=32)
    ref, run = tmp / "reference", tmp / "run"
    assert train_main(["fit", str(build), "--out", str(ref), *FIT]) == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "frozenaug.trainer", "fit", str(build), "--out", str(run), *FIT],
        env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while _epoch_done(run) < 0:  # kill during coarse epoch 1 (or its checkpoint)
        assert proc.poll() is None, "fit ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(random.Random(3).uniform(0, 0.2))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "model.keras").exists()
    at_kill = json.loads((run / "state.json").read_text())["history"]
    assert len(at_kill) >= 1
    assert train_main(["fit", str(build), "--out", str(run), "--resume"]) == 0
    return run, ref, at_kill


@pytest.mark.slow
def test_killed_fit_resumes_keeping_finished_epochs(killed_and_reference):
    run, ref, at_kill = killed_and_reference
    state = json.loads((run / "state.json").read_text())
    assert state["phase"] == "done"
    rows, ref_rows = _rows(run), _rows(ref)
    assert [(r["epoch"], r["phase"]) for r in rows] == [(r["epoch"], r["phase"])
                                                        for r in ref_rows]
    assert [r["phase"] for r in rows] == ["coarse"] * 3 + ["fine"]
    done = len(at_kill)
    # The epochs finished before the kill: the same losses and accuracies as the uninterrupted
    # run (the same seed), and the resume keeps them as they were, in state.json and the CSV.
    assert rows[:done] == ref_rows[:done]
    assert state["history"][:done] == at_kill
    assert [float(h["loss"]) for h in state["history"]] == [r["loss"] for r in rows]
    assert len(_weights(run)) == len(_weights(ref))


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "fit reseeds with seed + finished epochs when a phase starts, so the epochs after a "
    "mid-phase kill draw other random numbers than the uninterrupted run; when resume is "
    "exact this passes: remove the mark"))
def test_killed_fit_resumes_to_the_uninterrupted_result(killed_and_reference):
    import numpy as np

    run, ref, _ = killed_and_reference
    assert _rows(run) == _rows(ref)
    for a, b in zip(_weights(run), _weights(ref), strict=True):
        np.testing.assert_array_equal(a, b)


# --- one build per directory ----------------------------------------------------------------


SLOW_BUILD = (
    "import sys, time\n"
    "import frozenaug.builder.write.shards as s\n"
    "real = s.write_shard\n"
    "def slow(*a, **k):\n"
    "    time.sleep(0.2)\n"
    "    return real(*a, **k)\n"
    "s.write_shard = slow  # before frozenaug.builder.write.tasks imports it\n"
    "from frozenaug.builder.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def test_second_build_into_same_folder_is_refused(tmp_path, capsys):
    crash = _bench()
    inp = crash.make_input(tmp_path / "in.npz", 60)
    out = tmp_path / "out"
    args = crash.build_argv(inp, out, jobs=1)[3:]  # without python -m frozenaug.builder
    first = subprocess.Popen([sys.executable, "-c", SLOW_BUILD, *args], env=ENV, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / ".work" / "plan.json").exists():
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert (out / LOCK_NAME).read_text().strip() == str(first.pid)
        capsys.readouterr()

        assert build_main([str(a) for a in args]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and str(out) in err and f"pid {first.pid}" in err
    finally:
        assert first.wait(timeout=120) == 0
    assert build_main(["verify", str(out)]) == 0
    assert not (out / LOCK_NAME).exists()


def test_lock_dies_with_its_holder(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom frozenaug.common.lock import build_lock\n"
         "with build_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(60)\n",
         str(out)],
        env=ENV, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(InputError, match=f"pid {holder.pid} holds"), build_lock(out):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / LOCK_NAME).exists()  # the file stays; the lock does not
    with build_lock(out) as path:
        assert path.read_text().strip() == str(os.getpid())
    assert not path.exists()
    assert out.is_dir()  # it existed before this build_lock: kept


def test_lock_is_exclusive_under_contention(tmp_path):
    """Threads grab and release the lock (each open is its own flock): never two holders, even
    though every release unlinks the file another thread may just have opened."""
    out = tmp_path / "out"
    out.mkdir()
    holders, most, got = [0], [0], [0]
    guard = threading.Lock()

    def worker() -> None:
        for _ in range(100):
            try:
                with build_lock(out):
                    with guard:
                        holders[0] += 1
                        most[0] = max(most[0], holders[0])
                        got[0] += 1
                    time.sleep(0.0005)
                    with guard:
                        holders[0] -= 1
            except InputError:
                pass

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1 and got[0] > 0
    assert not (out / LOCK_NAME).exists()


def test_lock_removes_the_folder_it_created_if_left_empty(tmp_path):
    with build_lock(tmp_path / "new"):
        assert (tmp_path / "new" / LOCK_NAME).is_file()
    assert not (tmp_path / "new").exists()
    with pytest.raises(InputError, match="exists and is not a folder"):
        (tmp_path / "file").write_text("x")
        with build_lock(tmp_path / "file"):
            pass


# --- many readers of one build --------------------------------------------------------------


READER = (
    "import hashlib, sys\n"
    "from frozenaug.trainer.read.stream import ShardStream\n"
    "h = hashlib.sha256()\n"
    "s = ShardStream(sys.argv[1], 'train', batch_size=7, seed=1)\n"
    "for e in range(3):\n"
    "    for x, y in s.iter_numpy(e):\n"
    "        h.update(x.tobytes()); h.update(y.tobytes())\n"
    "print(h.hexdigest())\n"
)


def test_many_readers_at_once(tmp_path):
    build = make_build(tmp_path / "build", n_per_class=20, epochs=2, size=16, shard_size=24)
    procs = [subprocess.Popen([sys.executable, "-c", READER, str(build)], env=ENV, cwd=ROOT,
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    from frozenaug.trainer.read.stream import ShardStream

    digests: list[str] = []

    def read() -> None:
        import hashlib

        h = hashlib.sha256()
        s = ShardStream(build, "train", batch_size=7, seed=1)
        for e in range(3):
            for x, y in s.iter_numpy(e):
                h.update(x.tobytes())
                h.update(y.tobytes())
        digests.append(h.hexdigest())

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    digests += [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(digests) == 8 and len(set(digests)) == 1
    assert fmt.load_manifest(build).epochs == 2
