"""Crash safety and concurrency: SIGKILL a build or a fit at random points and finish it; one
build per directory at a time (builder/lock.py); many readers of one build at once.

bench/crash.py runs the same kill-and-resume trial 20 times; here it runs three times.
"""

from __future__ import annotations

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

from builder import format as fmt
from builder.cli import main as build_main
from builder.errors import InputError
from builder.lock import LOCK_NAME, build_lock

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


# --- fit: kill mid-run, --resume, same history length ---------------------------------------


FIT = ["--model", "simple_cnn", "--weights", "none", "--epochs-coarse", "3", "--epochs-fine",
       "1", "--batch-size", "8", "--patience", "10", "--xla", "off"]


def _epoch_done(run: Path) -> int:
    try:
        return int(json.loads((run / "state.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return -1


@pytest.mark.slow
def test_killed_fit_resumes_to_full_history(tmp_path, capsys):
    from trainer.cli import main as train_main

    build = make_build(tmp_path / "build", n_per_class=6, num_classes=3, size=32)
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainer", "fit", str(build), "--out", str(run), *FIT],
        env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    rng = random.Random(3)
    target = rng.randrange(3)  # kill during epoch target + 1, or while it is checkpointed
    deadline = time.monotonic() + 120
    while _epoch_done(run) < target:
        assert proc.poll() is None, "fit ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(rng.uniform(0, 0.3))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "model.keras").exists()
    done = _epoch_done(run)
    assert done >= target

    assert train_main(["fit", str(build), "--out", str(run), "--resume"]) == 0
    state = json.loads((run / "state.json").read_text())
    assert state["phase"] == "done"
    assert [r["epoch"] for r in state["history"]] == [0, 1, 2, 3]
    assert [r["phase"] for r in state["history"]] == ["coarse"] * 3 + ["fine"]
    assert len((run / "history.csv").read_text().splitlines()) == 1 + 4
    assert (run / "model.keras").is_file()


# --- one build per directory ----------------------------------------------------------------


SLOW_BUILD = (
    "import sys, time\n"
    "import builder.shards as s\n"
    "real = s.write_shard\n"
    "def slow(*a, **k):\n"
    "    time.sleep(0.2)\n"
    "    return real(*a, **k)\n"
    "s.write_shard = slow  # before builder.build imports it\n"
    "from builder.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def test_second_build_into_same_folder_is_refused(tmp_path, capsys):
    crash = _bench()
    inp = crash.make_input(tmp_path / "in.npz", 60)
    out = tmp_path / "out"
    args = crash.build_argv(inp, out, jobs=1)[3:]  # without python -m builder
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
         "import sys, time\nfrom builder.lock import build_lock\n"
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
    "from trainer.stream import ShardStream\n"
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
    from trainer.stream import ShardStream

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
