"""Open-file limit: raised to what a command needs, or refused before any work.

Under ``ulimit -n 12`` a build failed half-way with EMFILE (loky's pipes, HDF5, the shards)
and left ``.work`` behind. The soft limit may be raised up to the hard one by anyone; only a
hard limit below what the tools need is refused, in one line, before anything is written.
"""

from __future__ import annotations

import resource

from frozenaug.common.errors import InputError

NEEDED_OPEN_FILES = 256  # TensorFlow's import alone keeps ~40 open; loky 2 pipes a worker


def ensure_open_files(needed: int = NEEDED_OPEN_FILES) -> None:
    """Raise the soft RLIMIT_NOFILE to ``needed`` (or the hard limit, if higher is not allowed).

    Raises:
        InputError: the hard limit is below ``needed``.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise InputError(f"ulimit -n: at most {hard} open files allowed (hard limit), "
                         f"frozenaug needs {needed}; raise ulimit -n")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
