"""What a console script does around its command: the process-level promises.

Signals (SIGTERM is Ctrl-C, no child left: frozenaug.process.signals), a stdout whose failure
cannot spoil the work (frozenaug.process.stdio), no HOME created (frozenaug.process.homedirs),
a private TMPDIR removed at the end (Keras leaves its
temporary asset folder behind when a save fails), the open-file limit
(frozenaug.process.limits), then ``dispatch.dispatch``. In process (tests) the
CLIs call ``dispatch`` alone: none of this touches the caller's interpreter.
"""

from __future__ import annotations

import sys

from frozenaug.common.errors import EXIT_INPUT_ERROR, InputError
from frozenaug.process import homedirs, signals, stdio
from frozenaug.process.dispatch import dispatch


def run_console(prog: str, target: str, args: object, interrupted: str) -> int:
    """Run one command as the console script ``prog``; return its exit code."""
    signals.install()
    guard = stdio.guard_stdout()
    private_tmp = homedirs.private_tmpdir()
    config_tmp = homedirs.redirect_config_dirs()
    try:
        from frozenaug.process.limits import ensure_open_files

        ensure_open_files()
    except InputError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    try:
        code = dispatch(prog, target, args, interrupted)
    finally:
        signals.stop_children()
        homedirs.remove(config_tmp)
        homedirs.remove(private_tmp)
    failed = stdio.stdout_failure(guard)
    if failed is not None and code == 0:
        code, line = failed
        if line:
            print(f"{prog}: error: {line}", file=sys.stderr)
    return code
