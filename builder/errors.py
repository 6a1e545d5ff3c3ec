"""The one error type that the command-line tools turn into a one-line message and exit 2."""


class InputError(Exception):
    """Bad input or configuration: the message names the file (or flag) and what is wrong.

    The CLIs print ``frozenaug-<tool>: error: <message>`` on one line and exit with code 2.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # always one line


EXIT_INPUT_ERROR = 2
