"""CSV cells that a spreadsheet would not evaluate (OWASP "CSV injection").

Image file names and class names go into predict's CSV; a name such as ``=1+1.png``,
``+A1.png``, ``-2.png``, ``@x.png`` or one starting with a tab or carriage return is run as a
formula when the CSV is opened in Excel, LibreOffice or Google Sheets. Such a cell is written
with a leading ``'``, which the spreadsheets show as text and drop from the shown value.
Numbers this tool writes itself (the probabilities) are never text cells and stay as they are.
"""

from __future__ import annotations

FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def safe_cell(text: str) -> str:
    """``text``, with a ``'`` in front when a spreadsheet would take it for a formula."""
    text = str(text)
    return "'" + text if text.startswith(FORMULA_START) else text
