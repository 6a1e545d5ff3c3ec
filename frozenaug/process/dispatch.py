"""The one place where a command's failure becomes what a user sees: ``InputError`` a line on
stderr and exit code 2, an OSError of the environment a line naming its path, a closed stdout a
quiet exit, Ctrl-C or SIGTERM a hint and 130, running out of memory a line."""

from __future__ import annotations

from frozenaug.common.errors import EXIT_INPUT_ERROR, InputError


def dispatch(prog: str, target: str, args: object, interrupted: str) -> int:
    """Run a CLI subcommand given as ``"module:function"``; the one place where ``InputError``
    becomes a line on stderr and exit code 2, an OSError of the environment a line naming its
    path (frozenaug.process.oserrors), a closed stdout a quiet exit, and Ctrl-C or SIGTERM a
    hint and 130."""
    import importlib
    import sys

    from frozenaug.process import oserrors, signals

    module, func = target.split(":")

    def fail(line: str) -> int:
        print(f"{prog}: error: {' '.join(line.split())}", file=sys.stderr)
        return EXIT_INPUT_ERROR

    try:
        from frozenaug.process.environ import check_environment

        check_environment()  # before any library reads it
        return int(getattr(importlib.import_module(module), func)(args) or 0)
    except InputError as e:
        return fail(str(e))
    except BrokenPipeError:  # `frozenaug-build inspect B | head`: quiet, as cat and grep are
        from frozenaug.process.stdio import silence_stdout

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
