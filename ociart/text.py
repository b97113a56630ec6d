"""Text from artifacts, registries and the file system made safe to show on a terminal: the one escaping function.

Every human-readable output (CLI tables, lines, messages, errors) passes artifact-controlled text through
:func:`escape`: C0 and C1 control characters (ESC, OSC, BEL, CR, newline …), bidirectional overrides, line and
paragraph separators and undecodable bytes (surrogate escapes of non-UTF-8 names) become visible ``\\n``, ``\\x1b``,
``\\u202e`` escapes, so no artifact can move the cursor, set the title, forge a line or hide text. Printable text,
including non-ASCII letters, is unchanged. ``--json`` output is not escaped (JSON has its own).
"""

from __future__ import annotations

import os
import re

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _one(match: re.Match[str]) -> str:
    c = match.group()
    o = ord(c)
    if 0xDC80 <= o <= 0xDCFF:  # a byte that was not UTF-8 (os.fsdecode's surrogateescape)
        return f"\\x{o - 0xDC00:02x}"
    return _NAMED.get(c) or (f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}")


def escape(text: object) -> str:
    """``text`` (any object, via ``str``) with every control or invisible-direction character escaped."""
    return _UNSAFE.sub(_one, str(text))


def escaped_name(path: str | os.PathLike[str] | bytes) -> str:
    """A local file name for a message: undecodable bytes as ``\\xNN``, control characters escaped."""
    return escape(os.fsdecode(path))
