"""Text that is safe to draw: OpenCV's Hershey fonts draw printable ASCII only."""

from __future__ import annotations


def drawable(text: str) -> str:
    """``text`` as printable ASCII: the Hershey fonts draw nothing else, and a name that is not
    valid UTF-8 (a folder named with bytes like ``b"\\xff"`` arrives as lone surrogates) crashes
    OpenCV's string conversion, so every caption goes through here."""
    out = text.encode("ascii", "backslashreplace").decode("ascii")
    return "".join(c if c.isprintable() else "?" for c in out)
