#!/usr/bin/env python3
"""The memory and CPU time of a child process and its workers, sampled from /proc (Linux).

``measure(cmd)`` runs one command in a fresh process while ``TreeMemory`` reads the kernel's
counters every 20 ms; bench/intake_rss.py and bench/scale.py report what it returns.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile, RssShmem of ``pid`` in bytes ({} once it is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                    out[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError):
        return {}
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []
    return kids + [g for k in kids for g in _children(k)]


class TreeMemory:
    """Samples a process and its descendants every ``interval`` s: the peaks of the main
    process's RssAnon/RssFile/VmRSS, of any one descendant's VmRSS, and of the tree's sum."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid, self.interval = pid, interval
        self.peak = {"anon": 0, "file": 0, "rss": 0, "worker_rss": 0, "worker_anon": 0,
                     "worker_file": 0, "tree_rss": 0}
        self.cpu: dict[int, float] = {}  # last CPU seconds seen per process of the tree
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        p = self.peak
        while not self._stop.is_set():
            main = proc_status(self.pid)
            for q in (self.pid, *_children(self.pid)):
                self.cpu[q] = max(self.cpu.get(q, 0.0), cpu_seconds(q))
            if main:
                p["anon"] = max(p["anon"], main.get("RssAnon", 0))
                p["file"] = max(p["file"], main.get("RssFile", 0))
                p["rss"] = max(p["rss"], main.get("VmRSS", 0))
                tree = main.get("VmRSS", 0)
                for kid in _children(self.pid):
                    s = proc_status(kid)
                    tree += s.get("VmRSS", 0)
                    p["worker_rss"] = max(p["worker_rss"], s.get("VmRSS", 0))
                    p["worker_anon"] = max(p["worker_anon"], s.get("RssAnon", 0))
                    p["worker_file"] = max(p["worker_file"], s.get("RssFile", 0))
                p["tree_rss"] = max(p["tree_rss"], tree)
            self._stop.wait(self.interval)

    def stop(self) -> dict[str, float]:
        """Peaks in MiB, and ``tree_cpu`` s: the CPU time of the whole tree (sampled)."""
        self._stop.set()
        self._thread.join()
        return {**{f"{k}_mib": v / MIB for k, v in self.peak.items()},
                "tree_cpu_s": sum(self.cpu.values())}


def measure(cmd: list[str], env: dict | None = None, cwd: Path = ROOT) -> dict:
    """Run ``cmd``; its stdout's last line is JSON (the child's own numbers), merged with the
    sampled peaks (MiB) and the wall time."""
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
           "TQDM_DISABLE": "1", **(env or {})}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    mem = TreeMemory(proc.pid)
    stdout, stderr = proc.communicate()
    peaks = mem.stop()
    tree_cpu = peaks.pop("tree_cpu_s")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    child = json.loads(lines[-1]) if lines else {}
    return {**child, **{f"peak_{k}": v for k, v in peaks.items()},
            "tree_cpu_s": tree_cpu, "wall_s": time.perf_counter() - t0}
