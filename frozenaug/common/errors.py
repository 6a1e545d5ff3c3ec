"""The one error type that the command-line tools turn into a one-line message and exit 2."""

import argparse


class InputError(Exception):
    """Bad input or configuration: the message names the file (or flag) and what is wrong.

    The CLIs print ``frozenaug-<tool>: error: <message>`` on one line and exit with code 2.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # always one line


EXIT_INPUT_ERROR = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line too (``prog: error: ...``), not the usage block
    plus a line: the same promise as every other bad input. ``--help`` still shows usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        prog = self.prog.split()[0]
        self.exit(EXIT_INPUT_ERROR, f"{prog}: error: {' '.join(message.split())} "
                                    f"(see {self.prog} --help)\n")


def dispatch(prog: str, target: str, args: object, interrupted: str) -> int:
    """Run a CLI subcommand given as ``"module:function"``; the one place where ``InputError``
    becomes a line on stderr and exit code 2, and Ctrl-C a hint and 130."""
    import errno
    import importlib
    import sys

    module, func = target.split(":")
    try:
        return int(getattr(importlib.import_module(module), func)(args) or 0)
    except InputError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except OSError as e:  # a write the command did not guard: still one line for a full disk
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"{prog}: error: {e.filename or 'output'}: disk full ({e.strerror}); free some "
              "space and run again", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except MemoryError:
        print(f"{prog}: error: out of memory; use a smaller --size, --batch-size or data set",
              file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; {interrupted}", file=sys.stderr)
        return 130
