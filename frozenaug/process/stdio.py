"""Standard output is a report, not the product: a full or closed stdout must not spoil a run.

``fit ... > /dev/full`` used to die at the first progress line with a half-written run, and
``inspect BUILD | head -c0`` with a BrokenPipeError traceback. ``GuardedStdout`` swallows a
failed write, remembers it and sends the rest to /dev/null, so the command finishes its work
(the run complete, the build whole); the CLI then reports the failure in one line (a full
disk, exit 2) or, for a closed pipe, exits quietly as ``cat`` and ``grep`` do.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
from typing import Any


def silence_stdout() -> None:
    """Point fd 1 at /dev/null, so that the interpreter's last flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)


class GuardedStdout(io.TextIOBase):
    """A text stream over ``inner`` whose write and flush never raise an OSError."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.error: OSError | None = None

    def _guard(self, call: Any, *a: Any) -> Any:
        if self.error is not None:
            return None
        try:
            return call(*a)
        except OSError as e:
            self.error = e
            silence_stdout()
            with contextlib.suppress(OSError, ValueError):  # drop what the buffer still holds
                self.inner = open(os.devnull, "w")  # noqa: SIM115  (lives as long as stdout)
            return None

    def write(self, s: str) -> int:
        self._guard(self.inner.write, s)
        return len(s)

    def flush(self) -> None:
        self._guard(self.inner.flush)

    def isatty(self) -> bool:
        return self.error is None and self.inner.isatty()

    def fileno(self) -> int:
        return self.inner.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.inner, "encoding", "utf-8")

    def writable(self) -> bool:
        return True


def guard_stdout() -> GuardedStdout:
    """Replace ``sys.stdout`` with a guard over it; returns the guard."""
    guard = GuardedStdout(sys.stdout)
    sys.stdout = guard
    return guard


def stdout_failure(guard: GuardedStdout | None) -> tuple[int, str] | None:
    """After the command: (exit code, line or "") for a write that failed, else None. A closed
    pipe is quiet (141, as a shell reports SIGPIPE); anything else is one line, exit 2."""
    if guard is None:
        return None
    guard.flush()
    e = guard.error
    if e is None:
        return None
    if e.errno == errno.EPIPE:
        return 141, ""
    what = "disk full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "cannot write it"
    return 2, (f"standard output: {what} ({e.strerror}); the command finished its work, only "
               "its printed report was lost")
