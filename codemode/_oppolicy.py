"""Which operations a server lets guest code call: read-only, and the allow/deny patterns.

A pattern is an operation's ``group.name``, its operationId, or ``METHOD /path`` (the path
template as the spec writes it), each with ``fnmatch`` globs. Methods match in any case
(``delete /pet/*`` is ``DELETE /pet/*``). A pattern that matches no operation of the spec is a
mistake (a typo would silently allow or deny nothing), so it is refused when the server is
built, with the closest operations suggested.
"""

from __future__ import annotations

import difflib
import fnmatch
import re

from ._errors import ConfigError
from ._ir import ApiSpec, Operation

__all__ = ["OperationPolicy", "normalise_pattern"]

_METHOD_PATH = re.compile(r"^\s*([A-Za-z]+)\s+(\S.*?)\s*$")


def normalise_pattern(pattern: str) -> str:
    """``delete /pet/*`` -> ``DELETE /pet/*``; other patterns unchanged."""
    match = _METHOD_PATH.match(pattern)
    return f"{match.group(1).upper()} {match.group(2)}" if match else pattern.strip()


def _names(op: Operation) -> list[str]:
    return [n for n in (op.key, op.operation_id, op.label) if n]


class OperationPolicy:
    """``read_only``, ``allow`` and ``deny`` of one server, checked against its spec once."""

    def __init__(self, spec: ApiSpec, *, read_only: bool, allow: tuple[str, ...], deny: tuple[str, ...]) -> None:
        self.read_only = read_only
        self.allow = tuple(normalise_pattern(p) for p in allow)
        self.deny = tuple(normalise_pattern(p) for p in deny)
        for flag, given, patterns in (("--allow", allow, self.allow), ("--deny", deny, self.deny)):
            for raw, pattern in zip(given, patterns, strict=True):
                if not any(self._match(op, (pattern,)) for op in spec.operations):
                    raise ConfigError(_unmatched(spec, flag, raw, pattern), code="config.unmatched_pattern")

    @staticmethod
    def _match(op: Operation, patterns: tuple[str, ...]) -> bool:
        return any(fnmatch.fnmatchcase(name, pat) for pat in patterns for name in _names(op))

    def denial(self, op: Operation) -> str | None:
        """None when ``op`` is callable, else why not."""
        if self.read_only and not op.read_only:
            return f"api.{op.key} ({op.label}) is a write operation and this server is read-only"
        if self.allow and not self._match(op, self.allow):
            return f"api.{op.key} ({op.label}) is not in this server's allow-list"
        if self._match(op, self.deny):
            return f"api.{op.key} ({op.label}) is denied by this server's configuration"
        return None


def _unmatched(spec: ApiSpec, flag: str, raw: str, pattern: str) -> str:
    names = sorted({name for op in spec.operations for name in _names(op)})
    literal = re.sub(r"[*?\[\]]", "", pattern)
    close = difflib.get_close_matches(pattern, names, n=3, cutoff=0.5)
    close += [n for n in difflib.get_close_matches(literal, names, n=3, cutoff=0.5) if n not in close]
    hint = f" Closest operations: {', '.join(repr(c) for c in close[:3])}." if close else ""
    return (
        f"{flag} {raw!r} matches no operation of {spec.title}; a pattern is a group.name (api.<group>.<name> "
        f"without 'api.'), an operationId or 'METHOD /path', with * and ? globs.{hint}"
    )
