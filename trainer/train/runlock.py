"""One fit per run folder, and no build rewritten under a fit or evaluate that reads it.

``fit`` holds ``RUN/.lock`` exclusively (frozenaug.common.lock) for its whole life, and its
build (and ``--fine-build``) shared; ``evaluate`` and ``predict`` hold the run and a build they
read shared. So a second fit of one run (``--resume`` twice, ``--overwrite`` under a running
fit), an evaluate writing into a run a fit trains, or ``build --overwrite`` of a build a fit
reads, is refused at once in one line instead of two processes writing one folder.

A fit that fails (not an interrupt) before finishing its first epoch removes what this start
wrote into the run (fit's own files only), so a failed start leaves no half-made run; a run
with finished epochs stays, for ``--resume``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from frozenaug.common.errors import InputError
from frozenaug.common.lock import folder_lock, read_lock
from frozenaug.common.owned import removable, remove
from frozenaug.common.safeparse import read_json
from frozenaug.trainer.layout import FIT_OWN, RUN_FILES, STATE_NAME, fit_inputs

FIT_BUSY = ("another fit is writing this run (pid {holder} holds {lock}); wait for it to "
            "finish, or choose another --out")
FIT_READ = ("an evaluate or predict is reading this run ({lock} is held shared); wait for it "
            "to finish, or choose another --out")
READER_BUSY = ("a fit is writing this run (pid {holder} holds {lock}); wait for it to finish, "
               "then evaluate or predict")


def _entries(run: Path) -> set[tuple[str, int]]:
    """(name, inode) of what the run folder holds now: a rewritten file has a new inode."""
    try:
        return {(e.name, e.inode()) for e in os.scandir(run)}
    except OSError:
        return set()


def _epochs_done(run: Path) -> int:
    try:
        return len(read_json(run / STATE_NAME, "run state").get("history", []))
    except (OSError, ValueError, AttributeError, TypeError, InputError):
        return 0


def _remove_new(run: Path, before: set[tuple[str, int]], cfg: object) -> None:
    """Remove fit's own entries of ``run`` that were not there, as they were, before."""

    new = [n for n, ino in _entries(run) - before if n in RUN_FILES]
    inputs = fit_inputs(cfg.build_dir, cfg.weights, cfg.fine_build)  # type: ignore[attr-defined]
    with contextlib.suppress(InputError, OSError):  # a foreign file in tb/: leave it all
        remove(removable(run, new, FIT_OWN, inputs))


@contextlib.contextmanager
def holding_run(run: Path, cfg: object, *, writer: bool = True) -> Iterator[None]:
    """The locks of one fit: ``run`` exclusively (``writer``; a non-chief worker of
    multiworker writes elsewhere), its builds shared; a failed first epoch cleaned up."""
    with contextlib.ExitStack() as stack:
        for build in (cfg.build_dir, cfg.fine_build):  # type: ignore[attr-defined]
            if build:
                stack.enter_context(read_lock(build))
        if not writer:
            yield
            return
        stack.enter_context(folder_lock(run, busy=FIT_BUSY, read=FIT_READ))
        before = _entries(run)
        try:
            yield
        except Exception:
            if _epochs_done(run) == 0:
                _remove_new(run, before, cfg)
            raise


@contextlib.contextmanager
def reading_runs(runs: Sequence[str | os.PathLike],
                 build: str | os.PathLike | None) -> Iterator[None]:
    """evaluate's and predict's locks: each run shared (an ensemble has several), and
    ``build`` when it is a build."""
    from frozenaug.format import MANIFEST_NAME

    with contextlib.ExitStack() as stack:
        for run in dict.fromkeys(runs):  # a run named twice is locked once
            stack.enter_context(folder_lock(run, shared=True, busy=READER_BUSY, read=""))
        if build is not None and (Path(build) / MANIFEST_NAME).is_file():
            stack.enter_context(read_lock(build))
        yield
