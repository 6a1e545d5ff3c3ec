"""Round 3, processes: SIGTERM, resource limits, stdout, HOME, locks between runs and builds,
CSV injection (docs/FAULTS.md, "Round 3"). Console scripts as subprocesses, as users run them."""

from __future__ import annotations

import csv
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from frozenaug.common import errors, lock
from frozenaug.common.csvsafe import safe_cell
from frozenaug.process import dispatch, oserrors, signals

BIN = Path(sys.executable).parent
ENV = {**{k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},
       "NO_ALBUMENTATIONS_UPDATE": "1"}
FIT = ["--model", "simple_cnn", "--weights", "none", "--epochs-fine", "0", "--batch-size", "8",
       "--xla", "off"]


def run(tool: str, *argv, cwd: Path, env: dict | None = None, shell: str = "", **kw):
    cmd = [str(BIN / tool), *map(str, argv)]
    if shell:  # e.g. "ulimit -n 12": applied to this command only
        cmd = ["sh", "-c", shell + '; exec "$@"', "sh", *cmd]
    return subprocess.run(cmd, cwd=cwd, env=env or ENV, capture_output=True, text=True,
                          timeout=300, **kw)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    w = tmp_path_factory.mktemp("runs3")
    rng = np.random.default_rng(0)
    np.savez(w / "data.npz", images=rng.integers(0, 256, (48, 16, 16, 3)).astype(np.uint8),
             labels=np.arange(48) % 3)
    p = run("frozenaug-build", "build", "data.npz", "--out", "build", "--size", 16, "--epochs",
            1, "--policy", "none", "--jobs", 1, "--no-clean", cwd=w)
    assert p.returncode == 0, p.stderr
    p = run("frozenaug-train", "fit", "build", "--out", "run", *FIT, "--epochs-coarse", 1, cwd=w)
    assert p.returncode == 0, p.stderr
    return w


def one_line(p: subprocess.CompletedProcess, tool: str, *words: str) -> str:
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, (p.returncode, p.stderr)
    assert lines[0].startswith(f"{tool}: error: ") and "Traceback" not in p.stderr, p.stderr
    for w in words:
        assert w in lines[0], p.stderr
    return lines[0]


def _alive(pid: int) -> bool:
    return signals._alive(pid)


# --- SIGTERM: the clean stop of Ctrl-C, for the whole tree ---------------------------------


def test_sigterm_build_stops_cleanly_no_process_left_resumes(tmp_path):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "big.npz", images=rng.integers(0, 256, (1200, 32, 32, 3), np.uint8),
             labels=np.arange(1200) % 3)
    argv = [str(BIN / "frozenaug-build"), "build", "big.npz", "--out", "b", "--size", "32",
            "--epochs", "4", "--policy", "heavy", "--jobs", "2", "--shard-size", "64",
            "--no-clean"]
    p = subprocess.Popen(argv, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    done = tmp_path / "b" / ".work" / "done"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (done.is_dir() and any(done.iterdir())):
        time.sleep(0.05)
    kids = signals.descendants(p.pid)
    assert any(_alive(k) for k in kids), "the build had no workers running"
    p.send_signal(signal.SIGTERM)  # what `docker stop` and `kill` send: the main process only
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert err.strip().splitlines() == [
        "frozenaug-build: interrupted; run the same command again to resume"], err
    deadline = time.monotonic() + 5  # the resource trackers exit once their clients are gone
    while time.monotonic() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.05)
    assert not [k for k in kids if _alive(k)], "processes left behind"
    assert not (tmp_path / "b" / ".lock").exists()
    again = subprocess.run(argv, cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert again.returncode == 0 and "kept" in again.stdout, again.stderr
    assert not (tmp_path / "b" / ".work").exists()


def test_sigterm_fit_stops_cleanly_and_resumes(world, tmp_path):
    argv = [str(BIN / "frozenaug-train"), "fit", str(world / "build"), "--out", "r", *FIT,
            "--epochs-coarse", "30", "--patience", "100"]
    p = subprocess.Popen(argv, cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (tmp_path / "r" / "state.json").is_file():
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and err.strip().endswith("--resume to continue"), err
    assert not (tmp_path / "r" / ".lock").exists()
    assert not (tmp_path / "r" / "model.keras").exists()


def test_keyboardinterrupt_without_a_signal_is_not_an_interrupt(monkeypatch, capsys):
    monkeypatch.setattr(signals, "_installed", True)
    monkeypatch.setattr(signals, "_received", None)
    assert dispatch.dispatch("frozenaug-train", f"{__name__}:_raise_interrupt", None, "x") == 2
    assert "interrupted" not in capsys.readouterr().err
    monkeypatch.setattr(signals, "_received", signal.SIGTERM)
    assert dispatch.dispatch("frozenaug-train", f"{__name__}:_raise_interrupt", None, "x") == 130


def _raise_interrupt(args) -> int:
    raise KeyboardInterrupt


# --- resource limits, stdout, HOME ---------------------------------------------------------


def test_ulimit_n_12_build_refused_before_anything(world, tmp_path):
    p = run("frozenaug-build", "build", world / "data.npz", "--out", "b", "--size", 16,
            "--epochs", 1, "--policy", "none", "--jobs", 1, cwd=tmp_path, shell="ulimit -n 12")
    one_line(p, "frozenaug-build", "ulimit -n")
    assert list(tmp_path.iterdir()) == []


def test_ulimit_f_fit_leaves_no_run_and_no_temporary(world, tmp_path):
    (tmp_path / "tmp").mkdir()
    env = {**ENV, "TMPDIR": str(tmp_path / "tmp")}
    p = run("frozenaug-train", "fit", world / "build", "--out", "r", *FIT, "--epochs-coarse", 1,
            cwd=tmp_path, env=env, shell="ulimit -f 200")
    one_line(p, "frozenaug-train", "file too large", "ulimit -f")
    assert sorted(os.listdir(tmp_path)) == ["tmp"] and os.listdir(tmp_path / "tmp") == []


def test_home_that_does_not_exist_is_not_created(world, tmp_path):
    np.savez(tmp_path / "u.npz", images=np.zeros((3, 16, 16, 3), np.uint8))
    env = {**ENV, "HOME": str(tmp_path / "nonexistent" / "home"), "TMPDIR": str(tmp_path)}
    env.pop("KERAS_HOME", None)
    env.pop("MPLCONFIGDIR", None)
    p = run("frozenaug-train", "predict", world / "run", "u.npz", "--out", "p.csv",
            cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(tmp_path)) == ["p.csv", "u.npz"]  # no HOME, no config temp left


def test_inspect_into_a_closed_pipe_is_quiet(world):
    p = subprocess.Popen([str(BIN / "frozenaug-build"), "inspect", "build"], cwd=world,
                         env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # `| head -c0`
    err = p.stderr.read()
    assert p.wait(timeout=60) == 141 and err == b"", err


def test_fit_to_dev_full_finishes_the_run_and_says_so(world, tmp_path):
    with open("/dev/full", "w") as full:
        p = subprocess.run([str(BIN / "frozenaug-train"), "fit", str(world / "build"), "--out",
                            "r", *FIT, "--epochs-coarse", "1"], cwd=tmp_path, env=ENV,
                           stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
    one_line(p, "frozenaug-train", "standard output: disk full", "finished its work")
    assert (tmp_path / "r" / "model.keras").is_file()


def test_oserror_lines_name_the_path():
    e = PermissionError(errno.EACCES, "Permission denied", "/srv/out/x")
    assert oserrors.describe(e).startswith("/srv/out/x: permission denied (Permission denied)")
    assert "ulimit -n" in oserrors.describe(OSError(errno.EMFILE, "Too many open files", "f"))
    h5 = OSError("Unable to create file (unable to open file: name = 'a/b.h5', errno = 27, "
                 "error message = 'File too large')")
    assert oserrors.describe(h5).startswith("a/b.h5: file too large")
    assert oserrors.describe(OSError("no errno")) is None


# --- locks: one fit per run, no build rewritten while read ---------------------------------


def _holder(path: Path, shared: bool) -> subprocess.Popen:
    code = ("import sys, time\nfrom frozenaug.common.lock import folder_lock\n"
            f"with folder_lock(sys.argv[1], shared={shared}):\n"
            "    print('locked', flush=True)\n    time.sleep(120)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


@pytest.mark.parametrize("how", ["--resume", "--overwrite"])
def test_second_fit_of_a_run_is_refused(world, how):
    holder = _holder(world / "run", shared=False)  # a fit of this run, as far as locks go
    try:
        p = run("frozenaug-train", "fit", "build", "--out", "run", *FIT, "--epochs-coarse", 1,
                how, cwd=world)
        one_line(p, "frozenaug-train", "run: another fit is writing this run",
                 f"pid {holder.pid}")
        p = run("frozenaug-train", "evaluate", "run", "--out", "run/ev", cwd=world)
        one_line(p, "frozenaug-train", "run: a fit is writing this run")
        assert not (world / "run" / "ev").exists()
    finally:
        holder.kill()
        holder.wait()


def test_build_overwrite_refused_while_a_fit_reads_it(world):
    before = (world / "build" / "manifest.json").read_bytes()
    same = ["build", "data.npz", "--out", "build", "--size", 16, "--epochs", 1, "--policy",
            "none", "--jobs", 1, "--no-clean", "--overwrite"]
    holder = _holder(world / "build", shared=True)  # a fit's hold on its build
    try:
        p = run("frozenaug-build", *same, "--seed", 9, cwd=world)
        one_line(p, "frozenaug-build", "build: a running fit, evaluate or predict reads")
        # The build's own command (a script that builds before each of several fits) finds
        # it up to date beside the reader, writing nothing, and clears the .work a build
        # killed after writing its manifest left behind.
        work = world / "build" / ".work"
        (work / "done").mkdir(parents=True)
        (work / "plan.json").write_text("{}")
        p = run("frozenaug-build", *same, cwd=world)
        assert p.returncode == 0 and "build: up to date" in p.stdout, p.stderr
        assert not work.exists()
    finally:
        holder.kill()
        holder.wait()
    assert (world / "build" / "manifest.json").read_bytes() == before


def test_shared_lock_last_reader_removes_the_file(tmp_path):
    with lock.folder_lock(tmp_path, shared=True) as path:
        with lock.folder_lock(tmp_path, shared=True), pytest.raises(
                errors.InputError, match="reads this build"), lock.build_lock(tmp_path):
            pass
        assert path.exists()  # another reader still holds it
    assert not path.exists()
    with lock.build_lock(tmp_path):  # free again
        pass


# --- CSV injection ---------------------------------------------------------------------------


NASTY = ["=1+1", "+A1", "-2", "@x", "\tx", "\rx", "plain"]


def test_predict_csv_cells_are_never_formulas(world, tmp_path):
    (tmp_path / "flat").mkdir()
    for i, name in enumerate(NASTY):
        cv2.imwrite(str(tmp_path / "flat" / f"{name}.png"), np.full((16, 16, 3), i * 30,
                                                                     np.uint8))
    p = run("frozenaug-train", "predict", world / "run", "flat", "--out", "p.csv", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    with open(tmp_path / "p.csv", newline="") as f:
        rows = list(csv.reader(f))
    ids = sorted(r[0] for r in rows[1:])
    assert ids == sorted(safe_cell(f"{n}.png") for n in NASTY)
    assert all(not c.startswith(("=", "+", "-", "@", "\t", "\r")) for r in rows for c in r[:2])
    assert "plain.png" in ids and "'=1+1.png" in ids
    assert safe_cell("-0.5") == "'-0.5" and safe_cell("a=b") == "a=b"
