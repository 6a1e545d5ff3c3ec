"""``--backend dask``: shards written by a dask.distributed cluster (a LocalCluster on loopback)
are byte-identical to a local build; an unreachable scheduler is a one-line error, exit 2."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from frozenaug import format as fmt
from frozenaug.builder.cli import main

distributed = pytest.importorskip("distributed")

# 40 images of 32x32 in 2 classes; K=2 epochs of 8-image shards; heavy-mix: the batch stage
# runs on the cluster too.
BASE = ["--size", "32", "--epochs", "2", "--shard-size", "8", "--seed", "5",
        "--policy", "heavy-mix"]


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    path = tmp_path / "tiny.npz"
    np.savez(path, images=rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8),
             labels=np.arange(40) % 2)
    return path


def _build(inp: Path, out: Path, *extra: str) -> int:
    return main(["build", str(inp), "--out", str(out), *BASE, *extra])


def _children() -> set[int]:
    """This process's descendants, less multiprocessing's resource tracker (one per
    interpreter, started by the first spawned process, ends with the interpreter)."""
    found = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if not any("resource_tracker" in a for a in p.cmdline()):
                found.add(p.pid)
        except psutil.NoSuchProcess:
            pass
    return found


def _alive(pids: set[int], seconds: float = 10) -> set[int]:
    """The pids still running (zombies count as gone) after waiting up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        alive = set()
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.add(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def test_dask_cluster_matches_local_build(tiny, tmp_path, capsys, monkeypatch):
    before = _children()
    (tmp_path / "workers").mkdir()
    (tmp_path / "client").mkdir()
    monkeypatch.chdir(tmp_path / "workers")  # the workers' working directory
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        monkeypatch.chdir(tmp_path / "client")
        with distributed.Client(cluster) as client:
            client.wait_for_workers(2, timeout=60)
            worker_pids = set(client.run(os.getpid).values())
            with distributed.get_task_stream(client) as stream:
                # A relative --out: the workers must get it as an absolute path.
                assert _build(tiny, Path("d"), "--backend", "dask",
                              "--scheduler", cluster.scheduler_address) == 0
        spawned = _children() - before
    # The shards were written on the cluster (the task stream sees every client's tasks).
    d, local = tmp_path / "client" / "d", tmp_path / "l"
    ran = {t["key"] for t in stream.data if "write_task" in t["key"]}
    # the heavy build's shards and its finishing build's (build --finish), all on the cluster
    shards = [s for b in (d, d / fmt.FINISH_DIR)
              for s in json.loads((b / fmt.MANIFEST_NAME).read_text())["shards"]]
    assert len(ran) == len(shards), (sorted(ran), [s["path"] for s in shards])
    # Worker processes (not threads of this one), and none left once the cluster is closed.
    assert len(worker_pids) == 2 and worker_pids <= spawned, (worker_pids, spawned)
    assert not _alive(spawned, seconds=30), "cluster processes left behind"
    assert "wrote" in capsys.readouterr().out

    assert _build(tiny, local, "--jobs", "2") == 0
    assert (d / fmt.MANIFEST_NAME).read_bytes() == (local / fmt.MANIFEST_NAME).read_bytes()
    m = json.loads((d / fmt.MANIFEST_NAME).read_text())
    assert len(m["shards"]) > 4 and any(s["soft_labels"] for s in m["shards"])
    from frozenaug.builder.write.shards import sha256_file

    for s in m["shards"]:
        assert sha256_file(d / s["path"]) == sha256_file(local / s["path"]) == s["sha256"]
    assert not (d / ".work").exists()


def test_unreachable_scheduler_is_one_line_exit_2(tiny, tmp_path, capsys, monkeypatch):
    import frozenaug.builder.write.scheduler

    monkeypatch.setattr(frozenaug.builder.write.scheduler, "SCHEDULER_TIMEOUT_S", 2.0)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    out = tmp_path / "out"
    t0 = time.monotonic()
    assert _build(tiny, out, "--backend", "dask", "--scheduler", address) == 2
    assert time.monotonic() - t0 < 15
    err = capsys.readouterr().err
    assert err.startswith("frozenaug-build: error: --scheduler ") and err.count("\n") == 1
    assert address in err and not out.exists()

    assert _build(tiny, out, "--backend", "dask", "--scheduler", "127.0.0.1:notaport") == 2
    assert "127.0.0.1:notaport" in capsys.readouterr().err and not out.exists()


def test_scheduler_without_workers(tiny, tmp_path, capsys, monkeypatch):
    import frozenaug.builder.write.scheduler

    monkeypatch.setattr(frozenaug.builder.write.scheduler, "SCHEDULER_TIMEOUT_S", 1.0)
    out = tmp_path / "out"
    with distributed.LocalCluster(n_workers=0, host="127.0.0.1", dashboard_address=None) as c:
        assert _build(tiny, out, "--backend", "dask", "--scheduler", c.scheduler_address) == 2
    err = capsys.readouterr().err
    assert "has no workers" in err and err.count("\n") == 1 and not out.exists()
