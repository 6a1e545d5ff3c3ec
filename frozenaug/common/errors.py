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
