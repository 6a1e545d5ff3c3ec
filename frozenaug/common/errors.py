"""The one error type that the command-line tools turn into a one-line message and exit 2."""

import argparse
import reprlib


class InputError(Exception):
    """Bad input or configuration: the message names the file (or flag) and what is wrong.

    The CLIs print ``frozenaug-<tool>: error: <message>`` on one line and exit with code 2.
    """

    def __init__(self, message: str) -> None:
        text = " ".join(str(message).split())  # always one line
        if len(text) > MAX_MESSAGE_CHARS:  # and a short one, whatever a value in it held
            text = text[: MAX_MESSAGE_CHARS - 20] + " ... (message cut)"
        super().__init__(text)


MAX_MESSAGE_CHARS = 2000


EXIT_INPUT_ERROR = 2
BRIEF_CHARS = 80

# reprlib stops at a few elements and levels, so the work is bounded too: a YAML alias bomb is
# a small graph that a plain repr() would expand to gigabytes.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, BRIEF_CHARS, BRIEF_CHARS
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 6


def brief(value: object, limit: int = BRIEF_CHARS) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for ``got {brief(v)}`` in messages: a
    value from a file may be anything, and the message must stay one short line."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line too (``prog: error: ...``), not the usage block
    plus a line: the same promise as every other bad input. ``--help`` still shows usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        prog = self.prog.split()[0]
        self.exit(EXIT_INPUT_ERROR, f"{prog}: error: {' '.join(message.split())} "
                                    f"(see {self.prog} --help)\n")


def dispatch(prog: str, target: str, args: object, interrupted: str) -> int:
    """Run a CLI subcommand given as ``"module:function"``; the one place where ``InputError``
    becomes a line on stderr and exit code 2, an OSError of the environment a line naming its
    path (frozenaug.common.oserrors), a closed stdout a quiet exit, and Ctrl-C or SIGTERM a
    hint and 130."""
    import importlib
    import sys

    from frozenaug.common import oserrors, signals

    module, func = target.split(":")

    def fail(line: str) -> int:
        print(f"{prog}: error: {' '.join(line.split())}", file=sys.stderr)
        return EXIT_INPUT_ERROR

    try:
        from frozenaug.common.environ import check_environment

        check_environment()  # before any library reads it
        return int(getattr(importlib.import_module(module), func)(args) or 0)
    except InputError as e:
        return fail(str(e))
    except BrokenPipeError:  # `frozenaug-build inspect B | head`: quiet, as cat and grep are
        from frozenaug.common.stdio import silence_stdout

        silence_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as e:
        line = oserrors.describe(e)
        if line is None:
            raise
        return fail(line)
    except MemoryError:
        return fail("out of memory; use a smaller --size, --batch-size or data set")
    except KeyboardInterrupt:
        if signals.real_interrupt():
            print(f"{prog}: interrupted; {interrupted}", file=sys.stderr)
            return 130
        if oserrors.memory_limited():
            return fail(_out_of_memory("an interrupt that no signal sent", oserrors))
        return fail("stopped by an interrupt that no signal sent (a library gave up); run the "
                    f"command again: {interrupted}")
    except Exception as e:
        # Under an address-space limit, libraries fail for lack of memory in many ways
        # (SystemError in an import, a oneDNN "could not create a primitive", ...).
        if not (oserrors.memory_limited() or type(e).__name__ == "ResourceExhaustedError"):
            raise
        return fail(_out_of_memory(f"{type(e).__name__}: {e}", oserrors))


EXIT_BROKEN_PIPE = 141  # what a shell reports for a tool that SIGPIPE ended


def _out_of_memory(what: str, oserrors: object) -> str:
    limit = oserrors.memory_limited()  # type: ignore[attr-defined]
    where = f" under {limit}" if limit else ""
    return (f"out of memory{where} ({what[:200]}); raise the limit, or use a smaller --size, "
            "--batch-size or data set")
