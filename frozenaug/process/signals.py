"""SIGTERM is Ctrl-C: one clean stop for the whole process tree.

``docker stop`` and ``kill`` send SIGTERM to the main process only, whose default action kills
it at once: no ``finally`` runs, and its loky workers and resource tracker live on, reparented
to PID 1 and still writing. Here SIGTERM (like SIGINT) raises ``KeyboardInterrupt`` in the main
thread, so the command stops as after Ctrl-C (temporaries removed, locks released, exit 130,
resumable), and ``stop_children`` then ends every process this one started. Only a real signal
counts as an interrupt: a ``KeyboardInterrupt`` that none caused (seen under ``ulimit -v``) is
a failure, not a stop. SIGXFSZ is ignored so that a write past ``ulimit -f`` fails with EFBIG,
which the CLI reports in one line, instead of killing the process with a core dump.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from types import FrameType

_installed = False
_received: int | None = None


def _on_signal(signum: int, frame: FrameType | None) -> None:
    global _received
    if _received is None:
        _received = signum
        raise KeyboardInterrupt
    # A second signal while the first stop cleans up is ignored: the cleanup is short, and
    # SIGKILL remains for the impatient.


def install() -> None:
    """Route SIGINT and SIGTERM to ``KeyboardInterrupt``; ignore SIGXFSZ. Main thread only."""
    global _installed
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    _installed = True


def real_interrupt() -> bool:
    """Whether a ``KeyboardInterrupt`` is a stop asked for: True unless ``install`` ran and no
    SIGINT or SIGTERM arrived (in process, e.g. in tests, every one counts)."""
    return not _installed or _received is not None


def received() -> int | None:
    return _received


def _children_of(pid: int) -> list[int]:
    """Direct children, from /proc (Linux); empty where there is none."""
    kids = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(k) for k in f.read().split()]
    except OSError:
        pass
    return kids


def descendants(pid: int | None = None) -> list[int]:
    """Every process below ``pid`` (default: this one), parents before children."""
    out, todo = [], [os.getpid() if pid is None else pid]
    while todo:
        for kid in _children_of(todo.pop()):
            if kid not in out:
                out.append(kid)
                todo.append(kid)
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _is_tracker(pid: int) -> bool:
    """A resource tracker (loky's, multiprocessing's): it exits by itself once every process
    that talks to it is gone, after removing what they registered; killing it first leaks
    those and makes loky start another with a warning."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"resource_tracker" in f.read()
    except OSError:
        return False


def stop_children(grace_s: float = 3.0) -> int:
    """End every descendant but the resource trackers: loky's own shutdown first, then
    SIGTERM, up to ``grace_s`` to exit, SIGKILL; our own children are reaped. The trackers
    follow when this process exits. Returns how many were stopped."""
    if not descendants():
        return 0
    with contextlib.suppress(Exception):  # loky's own shutdown first: it joins its workers
        import sys

        if "joblib.externals.loky" in sys.modules:
            from joblib.externals.loky import get_reusable_executor

            get_reusable_executor().shutdown(wait=True, kill_workers=True)
    pids = [p for p in descendants() if not _is_tracker(p)]
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while pids and time.monotonic() < deadline:
        _reap()
        if not any(_alive(p) for p in pids):
            break
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    _reap()
    return len(pids)


def _reap() -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
