"""``fit --strategy multiworker``: TF_CONFIG checks, the per-worker slicing of the global
batches, and two worker processes on 127.0.0.1 that train as one process with the same global
batch does, resumed after a kill.

The end-to-end test runs the installed console script (``.venv/bin/frozenaug-train``), as a
user would on two machines; TensorFlow's collectives go over gRPC between the two processes.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from build_factory import make_build, read_stamp

from frozenaug.common.errors import InputError
from frozenaug.trainer.train.multiworker import read_tf_config

SCRIPT = Path(sys.executable).parent / "frozenaug-train"


def tf_config(ports: list[int], index: int, kind: str = "worker") -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": kind, "index": index}})


# --- TF_CONFIG ------------------------------------------------------------------------------


def test_read_tf_config_roles():
    c = read_tf_config({"TF_CONFIG": tf_config([1001, 1002], 0)})
    assert (c.workers, c.chief) == (2, True)
    assert not read_tf_config({"TF_CONFIG": tf_config([1001, 1002], 1)}).chief
    one = read_tf_config({"TF_CONFIG": tf_config([1001], 0)})
    assert (one.workers, one.chief) == (1, True)
    with_chief = {"cluster": {"chief": ["a:1"], "worker": ["b:2", "c:3"]}}
    c = read_tf_config({"TF_CONFIG": json.dumps({**with_chief,
                                                 "task": {"type": "worker", "index": 0}})})
    assert (c.workers, c.chief) == (3, False)  # worker 0 is not the chief when there is one
    c = read_tf_config({"TF_CONFIG": json.dumps({**with_chief,
                                                 "task": {"type": "chief", "index": 0}})})
    assert c.chief


@pytest.mark.parametrize("value, fault", [
    (None, "is not set"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"task": {"type": "worker", "index": 0}}', "no 'cluster'"),
    ('{"cluster": {"worker": ["h:1"]}}', "no 'task'"),
    ('{"cluster": {"worker": ["h:1"], "ps": ["h:2"]}, "task": {"type": "worker", "index": 0}}',
     "'ps'"),
    ('{"cluster": {"worker": ["h1"]}, "task": {"type": "worker", "index": 0}}', "host:port"),
    ('{"cluster": {"worker": ["h:1", "h:1"]}, "task": {"type": "worker", "index": 0}}',
     "listed twice"),
    ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "chief", "index": 0}}', "task.type"),
    ('{"cluster": {"worker": ["h:1", "h:2"]}, "task": {"type": "worker", "index": 2}}',
     r"task.index 2 is not in 0..1"),
])
def test_read_tf_config_faults(value, fault):
    env = {} if value is None else {"TF_CONFIG": value}
    with pytest.raises(InputError, match=fault) as e:
        read_tf_config(env)
    assert "TF_CONFIG" in str(e.value)


def test_cli_refuses_multiworker_without_tf_config(tmp_path, monkeypatch, capsys):
    from frozenaug.trainer.cli import main

    build = make_build(tmp_path / "b", n_per_class=2)
    argv = ["fit", str(build), "--out", str(tmp_path / "run"), "--strategy", "multiworker"]
    for value in (None, '{"cluster": {"worker": ["127.0.0.1:x"]}}'):
        if value is None:
            monkeypatch.delenv("TF_CONFIG", raising=False)
        else:
            monkeypatch.setenv("TF_CONFIG", value)
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "TF_CONFIG" in err, err
    assert not (tmp_path / "run").exists()


def test_xla_under_multiworker():
    from frozenaug.trainer.config import FitConfig
    from frozenaug.trainer.train.plan import _jit

    mw = {"strategy": "multiworker"}
    assert _jit(FitConfig(xla="auto"), gpu=True)  # other strategies: unchanged
    assert not _jit(FitConfig(xla="auto", **mw), gpu=True)
    assert _jit(FitConfig(xla="on", **mw), gpu=True)
    with pytest.raises(InputError, match="--xla on.*CPUs"):
        _jit(FitConfig(xla="on", **mw), gpu=False)


# --- the slicing ----------------------------------------------------------------------------


@pytest.mark.parametrize("workers, local", [(1, 1), (2, 1), (3, 1), (2, 2)])
def test_worker_slices_cover_each_global_batch_once(tmp_path, workers, local):
    from frozenaug.trainer.read.stream import ShardStream
    from frozenaug.trainer.train.multiworker import worker_slices

    # 21 train images at a global batch of 8: two full batches and a last one of 5, which
    # still gives each of up to 4 parts a row.
    build = make_build(tmp_path / "b", n_per_class=7, num_classes=3)
    stream = ShardStream(build, "train", batch_size=8, shuffle=True, seed=3)
    globals_ = [read_stamp(x)[0] for x, _ in stream.iter_numpy(1)]
    assert [len(g) for g in globals_] == [8, 8, 5]
    seen = []  # per worker: its per-replica batches in order
    for w in range(workers):
        ds = worker_slices(stream.dataset(initial_epoch=1), w, workers, local)
        assert (ds.options().experimental_distribute.auto_shard_policy.name == "OFF")
        seen.append([read_stamp(x.numpy())[0] for x, _ in ds])
    for step, g in enumerate(globals_):
        parts = [seen[w][step * local + r] for w in range(workers) for r in range(local)]
        assert all(len(p) for p in parts)  # no replica gets an empty share
        np.testing.assert_array_equal(np.concatenate(parts), g)  # worker order = batch order
        if len(g) == 8 and 8 % (workers * local) == 0:
            assert {len(p) for p in parts} == {8 // (workers * local)}


# --- two processes --------------------------------------------------------------------------


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Procs:
    """Console-script processes, killed (whole process groups) whatever happens."""

    def __init__(self, cwd: Path) -> None:
        self.cwd, self.procs = cwd, []

    def start(self, name: str, args: list[str], **env: str) -> subprocess.Popen:
        full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "NO_ALBUMENTATIONS_UPDATE": "1",
                    "CUDA_VISIBLE_DEVICES": "", **env}
        if "TF_CONFIG" not in env:
            full_env.pop("TF_CONFIG", None)
        out = open(self.cwd / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        p = subprocess.Popen([str(SCRIPT), *args], cwd=self.cwd, env=full_env, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True)
        p.name, p.log = name, out  # type: ignore[attr-defined]
        self.procs.append(p)
        return p

    def wait(self, p: subprocess.Popen, timeout: float) -> str:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_all()
            pytest.fail(f"{p.name} did not finish in {timeout} s:\n{self.logs()}")  # type: ignore[attr-defined]
        return (self.cwd / f"{p.name}.log").read_text()  # type: ignore[attr-defined]

    def kill(self, p: subprocess.Popen) -> None:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()

    def kill_all(self) -> None:
        for p in self.procs:
            self.kill(p)
            p.log.close()  # type: ignore[attr-defined]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} (exit {p.poll()}):\n"  # type: ignore[attr-defined]
                         + (self.cwd / f"{p.name}.log").read_text()[-3000:]  # type: ignore[attr-defined]
                         for p in self.procs)


def history(run: Path) -> list[dict[str, str]]:
    with open(run / "history.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_two_workers_train_as_one_and_resume(tmp_path):
    # 24 train images (3 steps of a global batch of 8: no remainder, so one process keeps
    # the same batches), 9 val images; no dropout, so the runs differ only by the order of
    # float sums: the two workers reproduce the one-process curve to ~1e-6.
    build = make_build(tmp_path / "b", n_per_class=8, val_per_class=3, num_classes=3, size=8)
    (tmp_path / "cfg.json").write_text(json.dumps({"dropout": 0.0, "head_units": [8]}))
    common = ["fit", str(build), "--model", "simple_cnn", "--epochs-coarse", "4",
              "--config", "cfg.json", "--no-precise-bn"]
    ports = free_ports(2)
    procs = Procs(tmp_path)
    try:
        # One process, global batch 8; two workers of 4 each, one killed after the first epoch.
        # The second worker gets its own --out: a non-chief must write nothing there.
        one = procs.start("one", [*common, "--batch-size", "8", "--out", "run1"])
        w0 = procs.start("w0", [*common, "--batch-size", "4", "--strategy", "multiworker",
                                "--out", "run"], TF_CONFIG=tf_config(ports, 0))
        w1 = procs.start("w1", [*common, "--batch-size", "4", "--strategy", "multiworker",
                                "--out", "run_w1"], TF_CONFIG=tf_config(ports, 1),
                         TMPDIR=str(tmp_path))
        state = tmp_path / "run" / "state.json"
        deadline = time.monotonic() + 240
        while not (state.is_file() and json.loads(state.read_text())["epoch"] >= 0):
            if w0.poll() is not None or w1.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the workers ended or stalled before their first epoch:\n"
                            f"{procs.logs()}")
            time.sleep(0.02)
        # Worker 1 dies: the chief stops at its next collective, with one line saying so.
        procs.kill(w1)
        log = procs.wait(w0, 120)
        assert w0.returncode == 2 and "lost contact with another worker" in log, procs.logs()
        assert json.loads(state.read_text())["phase"] == "coarse", "finished before the kill"
        assert not (tmp_path / "run_w1").exists()

        # Both restart with the same command and --resume, from the chief's checkpoint.
        ports = free_ports(2)
        tmp2 = tmp_path / "worker-tmp"
        tmp2.mkdir()
        w0 = procs.start("w0r", [*common, "--batch-size", "4", "--strategy", "multiworker",
                                 "--out", "run", "--resume"], TF_CONFIG=tf_config(ports, 0))
        w1 = procs.start("w1r", [*common, "--batch-size", "4", "--strategy", "multiworker",
                                 "--out", "run", "--resume"], TF_CONFIG=tf_config(ports, 1),
                         TMPDIR=str(tmp2))
        logs = [procs.wait(p, 240) for p in (w0, w1)]
        procs.wait(one, 240)
        assert [p.returncode for p in (one, w0, w1)] == [0, 0, 0], procs.logs()
    finally:
        procs.kill_all()

    # The non-chief removed its private run folder; the chief's folder is a complete run.
    assert [p.name for p in tmp2.glob("frozenaug-worker-*")] == []
    run = tmp_path / "run"
    assert {"model.keras", "run.json", "state.json", "history.csv", "config.json"} <= {
        p.name for p in run.iterdir()}
    info = json.loads((run / "run.json").read_text())
    assert (info["strategy"], info["workers"], info["replicas"], info["global_batch_size"]) == (
        "multiworker", 2, 2, 8)
    # The same final weights on both workers (each prints the sha256 of its own).
    digests = [re.findall(r"final weights sha256 ([0-9a-f]{16})", log) for log in logs]
    assert len(digests[0]) == 1 and digests[0] == digests[1], logs
    # The resumed two-worker curve is the one-process curve: every epoch, all-reduced metrics
    # of the whole val split.
    two, ref = history(run), history(tmp_path / "run1")
    assert [r["epoch"] for r in two] == [r["epoch"] for r in ref] == ["0", "1", "2", "3"]
    for key in ("loss", "val_loss", "val_ce", "val_accuracy"):
        np.testing.assert_allclose([float(r[key]) for r in two], [float(r[key]) for r in ref],
                                   rtol=1e-4, err_msg=key)


# --- the Keras adaptation (keras-team/keras#20585) --------------------------------------------

_UPSTREAM = r"""
import sys
import numpy as np, tensorflow as tf, keras
from frozenaug.trainer.train import keras_fixes
strategy = tf.distribute.MultiWorkerMirroredStrategy()
with strategy.scope():
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    m.compile("sgd", "categorical_crossentropy")
def make(ctx):
    return tf.data.Dataset.from_tensor_slices((np.ones((32, 4), "float32"),
                                               np.eye(2, dtype="float32")[np.arange(32) % 2])
                                              ).batch(8)
ds = strategy.distribute_datasets_from_function(make)
try:
    if sys.argv[1] == "fixed":
        with keras_fixes.multiworker_fixes():
            m.fit(ds, epochs=1, verbose=0, steps_per_epoch=4)
    else:
        m.fit(ds, epochs=1, verbose=0, steps_per_epoch=4)
    print("FIT OK", keras.__version__)
except Exception as e:
    print("FIT FAILED", type(e).__name__, keras.__version__)
"""


def _two_workers(mode: str, cwd: Path) -> list[str]:
    ports = free_ports(2)
    procs = [subprocess.Popen([sys.executable, "-c", _UPSTREAM, mode], cwd=cwd, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              env={**os.environ, "TF_CONFIG": tf_config(ports, i),
                                   "TF_CPP_MIN_LOG_LEVEL": "3"}) for i in range(2)]
    out = []
    for p in procs:
        try:
            text, _ = p.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            p.kill()
            text = "TIMED OUT"
        out.append((text.strip().splitlines() or ["NO OUTPUT"])[-1])
    return out


@pytest.mark.slow
def test_keras_still_needs_the_multiworker_fixes(tmp_path: Path) -> None:
    """Two workers of MultiWorkerMirroredStrategy: plain Keras fails their fit, the adapted
    one trains. When plain Keras trains too, upstream has fixed keras-team/keras#20585 and
    trainer/train/keras_fixes.py can go."""
    fixed = _two_workers("fixed", tmp_path)
    assert all(line.startswith("FIT OK") for line in fixed), fixed
    plain = _two_workers("plain", tmp_path)
    assert not all(line.startswith("FIT OK") for line in plain), (
        f"Keras trains under MultiWorkerMirroredStrategy without the adaptation ({plain}): "
        "keras-team/keras#20585 is fixed upstream; remove trainer/train/keras_fixes.py")
    assert any(line.startswith("FIT FAILED ValueError") for line in plain), plain


def test_another_keras_is_refused_for_multiworker(monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    from frozenaug.trainer.train import keras_fixes

    monkeypatch.setattr(keras, "__version__", "3.99.0")
    with pytest.raises(InputError, match=r"Keras 3\.99\.0 is not a release.*keras>=3\.15,<3\.16"
                       ), keras_fixes.multiworker_fixes():
        pass
