"""Scopes of one server, and what a set of granted scopes may call.

Every server ``<name>`` publishes:

* ``<name>:read``: its safe operations (GET, HEAD, OPTIONS). Also the scope needed to use its MCP
  endpoint at all (``search`` included).
* ``<name>:write``: every other operation.
* ``<name>:<spec scope>`` for each OAuth scope the spec's own security requirements use: an
  operation is allowed by these when one of its requirement alternatives lists only granted ones.
* ``<name>:<suffix>`` for each ``[servers.<name>.scopes.<suffix>]`` of the config: the operations
  with one of its tags or matching one of its globs (key, operationId or ``METHOD /path``).

An operation is callable iff the granted scopes hold the coarse scope of its method class, or a
finer scope that covers it. ``denial`` says which scope would allow it otherwise.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from codemode import ApiSpec, Operation

from ._config import ScopeEntry

__all__ = ["MAX_SPEC_SCOPES", "ScopeInfo", "ServerScopes", "parse_scope", "scope_token_ok"]

MAX_SPEC_SCOPES = 100  # a spec with more OAuth scopes publishes the first 100 (coarse scopes still cover all)
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")  # RFC 6749 §3.3 scope-token


def scope_token_ok(scope: str) -> bool:
    return bool(_SCOPE_TOKEN.fullmatch(scope)) and len(scope) <= 200


def parse_scope(value: str | None) -> tuple[str, ...]:
    """A space-separated scope parameter as an ordered tuple without duplicates."""
    return tuple(dict.fromkeys((value or "").split()))


@dataclass(frozen=True)
class ScopeInfo:
    name: str
    description: str
    operations: int  # how many operations it makes callable


def _matches(op: Operation, pattern: str) -> bool:
    method, _, path = pattern.partition(" ")
    if (path and method.isalpha()) or (method == "*" and path):
        return fnmatch.fnmatchcase(op.method.upper(), method.upper()) and fnmatch.fnmatchcase(op.path, path)
    return fnmatch.fnmatchcase(op.key, pattern) or (
        op.operation_id is not None and fnmatch.fnmatchcase(op.operation_id, pattern)
    )


class ServerScopes:
    """The scope catalogue of one server and the policy that maps granted scopes to operations."""

    def __init__(self, name: str, spec: ApiSpec, extra: Mapping[str, ScopeEntry] | None = None) -> None:
        self.name = name
        self.read = f"{name}:read"
        self.write = f"{name}:write"
        ops = spec.operations
        n_read = sum(1 for op in ops if op.read_only)
        n_write = len(ops) - n_read
        infos = [
            ScopeInfo(self.read, f"Search the {spec.title} API and call its {n_read} read-only operations", n_read),
            ScopeInfo(self.write, f"Call its {n_write} other operations: create, change and delete", n_write),
        ]
        described = {s: d for scheme in spec.security_schemes.values() for f in scheme.flows for s, d in f.scopes}
        used: dict[str, int] = {}
        for op in ops:
            for s in {s for alt in op.security_scopes for s in alt}:
                used[s] = used.get(s, 0) + 1
        self._spec_scopes: dict[str, str] = {}  # published name -> spec scope
        for s in sorted(used):
            published = f"{name}:{s}"
            if s in ("read", "write") or not scope_token_ok(published) or len(self._spec_scopes) >= MAX_SPEC_SCOPES:
                continue
            self._spec_scopes[published] = s
            why = described.get(s) or f"the API's own scope {s!r}"
            infos.append(ScopeInfo(published, f"{why} ({used[s]} operations need it)", used[s]))
        self._extra: dict[str, ScopeEntry] = {}
        for suffix, entry in (extra or {}).items():
            published = f"{name}:{suffix}"
            if published in (self.read, self.write) or published in self._spec_scopes:
                continue
            self._extra[published] = entry
            n = sum(1 for op in ops if self._extra_covers(entry, op))
            infos.append(ScopeInfo(published, entry.description or f"{n} operations chosen by the operator", n))
        self.infos: tuple[ScopeInfo, ...] = tuple(infos)
        self.supported: tuple[str, ...] = tuple(i.name for i in infos)

    @staticmethod
    def _extra_covers(entry: ScopeEntry, op: Operation) -> bool:
        return bool(set(entry.tags) & set(op.tags)) or any(_matches(op, p) for p in entry.operations)

    def covering(self, op: Operation) -> list[str]:
        """Every way to be allowed ``op``: single scopes, or ``a + b`` when all of a spec alternative are needed."""
        ways = [self.read if op.read_only else self.write]
        prefix = f"{self.name}:"
        for alt in op.security_scopes:
            published = [prefix + s for s in alt]
            if alt and all(p in self._spec_scopes for p in published):
                ways.append(" + ".join(published))
        ways += [s for s, entry in self._extra.items() if self._extra_covers(entry, op)]
        return list(dict.fromkeys(ways))

    def allows(self, op: Operation, granted: frozenset[str]) -> bool:
        if (self.read if op.read_only else self.write) in granted:
            return True
        prefix = f"{self.name}:"
        for alt in op.security_scopes:
            if alt and all(prefix + s in granted and prefix + s in self._spec_scopes for s in alt):
                return True
        return any(s in granted and self._extra_covers(e, op) for s, e in self._extra.items())

    def denial(self, granted: Iterable[str]) -> Callable[[Operation], str | None]:
        """The ``Caller.denial`` of a token holding ``granted``."""
        held = frozenset(granted)

        def why(op: Operation) -> str | None:
            if self.allows(op, held):
                return None
            ways = self.covering(op)
            more = f" (or {', or '.join(ways[1:])})" if len(ways) > 1 else ""
            return f"needs scope {ways[0]}{more}; this token has {' '.join(sorted(held)) or 'no scope'}"

        return why

    def unknown(self, scopes: Iterable[str]) -> list[str]:
        known = set(self.supported)
        return [s for s in scopes if s not in known]
