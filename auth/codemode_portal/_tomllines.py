"""Where a key sits in a TOML file: 1-based line numbers for validation errors.

``tomllib`` keeps no positions, so the source is scanned once for table headers and
``key =`` lines. Inline tables and arrays map to the line of their key; a deeper path
falls back to its nearest ancestor that was found.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["KeyLines"]

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")
_PART = re.compile(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""")


def _parts(dotted: str) -> tuple[str, ...]:
    return tuple(p.strip("\"'") for p in _PART.findall(dotted))


class KeyLines:
    def __init__(self, text: str) -> None:
        self.lines: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        in_multiline = False
        for n, line in enumerate(text.splitlines(), start=1):
            if line.count('"""') % 2 == 1 or line.count("'''") % 2 == 1:
                in_multiline = not in_multiline
                if not in_multiline:
                    continue
            if in_multiline and not _KEY.match(line):
                continue
            header = _HEADER.match(line)
            if header:
                table = _parts(header.group(1))
                self.lines.setdefault(table, n)
                continue
            key = _KEY.match(line)
            if key:
                self.lines.setdefault((*table, *_parts(key.group(1))), n)

    def line_of(self, path: Sequence[str | int]) -> int | None:
        keys = tuple(str(p) for p in path)
        while keys:
            if keys in self.lines:
                return self.lines[keys]
            keys = keys[:-1]
        return None
