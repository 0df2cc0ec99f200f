"""Text from the data, made safe for where it is shown: a terminal or a spreadsheet.

A leaf module (imports nothing of ours): the CLI's error line, ``fleetphysics sql`` and the
dashboard's CSV downloads all use it.

* Terminal: a GPU name, host or error text may carry ESC sequences or other control
  characters that move the cursor, clear the screen or retitle the window. Each control
  character (C0, DEL, C1) and each bidirectional override is written as a visible escape
  (``\\x1b``, ``\\u202e``), so the text is shown, never obeyed.
* Spreadsheet: a cell starting with ``= + - @``, TAB or CR is read as a formula by Excel,
  LibreOffice and Google Sheets (``=cmd|' /C calc'!A0``). Such a text cell gets a leading
  ``'`` (the OWASP rule for CSV injection); numbers are left alone.
"""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

_BIDI = [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_TERMINAL = {c: f"\\x{c:02x}" for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)]}
_TERMINAL.update({c: f"\\u{c:04x}" for c in _BIDI})


def terminal_safe(text: str, keep_newlines: bool = False) -> str:
    """``text`` with every control character and bidi override written as an escape.

    ``keep_newlines`` keeps ``\\n`` as is (a message of several lines); a table cell
    escapes it too, so one row stays one line.
    """
    table = _TERMINAL if not keep_newlines else {k: v for k, v in _TERMINAL.items() if k != 0x0A}
    return str(text).translate(table)


def spreadsheet_safe(text: str) -> str:
    """``text`` with a ``'`` in front when a spreadsheet would read it as a formula."""
    text = str(text)
    return "'" + text if text.startswith(FORMULA_STARTS) else text
