"""Secret scrubbing for everything that leaves the host towards guest code or logs.

A :class:`Scrubber` knows a set of secrets (API keys, passwords, tokens, static header
values) and replaces each occurrence with ``[REDACTED]``: in plain text, in nested JSON
(keys and values) and in header mappings.

* Secrets of 6 characters or more are replaced wherever they occur as a substring,
  together with their URL-encoded forms (an API key sent in a query string comes back
  percent-encoded in echoed URLs).
* Shorter secrets would match too much ordinary text, so they are only replaced where a
  whole string equals them.
* Derived forms are the caller's to add: ``Basic <base64(user:pass)>`` and
  ``Bearer <token>`` (see :func:`basic_auth_forms`); :class:`~codemode._credentials.Credentials`
  adds them for the schemes it injects.

Matching uses one compiled regex alternation (longest secret first), rebuilt on
:meth:`Scrubber.add`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

__all__ = ["MIN_SUBSTRING_LENGTH", "REDACTED", "Scrubber", "basic_auth_forms"]

REDACTED = "[REDACTED]"
MIN_SUBSTRING_LENGTH = 6


def basic_auth_forms(username: str, password: str) -> list[str]:
    """The secrets that HTTP basic credentials produce: the password, the pair, its base64."""
    pair = f"{username}:{password}"
    encoded = base64.b64encode(pair.encode("utf-8")).decode("ascii")
    return [password, pair, encoded, f"Basic {encoded}"]


_PERCENT = re.compile(r"%[0-9A-F]{2}")


class Scrubber:
    """Replaces known secrets with ``[REDACTED]``. Cheap when there are no secrets."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._long: set[str] = set()
        self._short: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None
        self.add(*secrets)

    def __repr__(self) -> str:  # never show the secrets themselves
        return f"<Scrubber secrets={len(self._long) + len(self._short)}>"

    def __len__(self) -> int:
        return len(self._long) + len(self._short)

    def add(self, *secrets: str) -> None:
        """Learn more secrets. Empty strings are ignored."""
        long = set(self._long)
        short = set(self._short)
        for secret in secrets:
            if not secret:
                continue
            if len(secret) < MIN_SUBSTRING_LENGTH:
                short.add(secret)
                continue
            long.add(secret)
            for encoded in (quote(secret, safe=""), quote_plus(secret, safe="")):
                long.add(encoded)
                long.add(_PERCENT.sub(lambda m: m.group(0).lower(), encoded))  # %2f as well as %2F
        if long == self._long and short == self._short:
            return
        pattern = None
        if long:
            ordered = sorted(long, key=lambda s: (-len(s), s))
            pattern = re.compile("|".join(re.escape(s) for s in ordered))
        # Publish the new state only when it is complete (readers never see a half build).
        self._long = long
        self._short = frozenset(short)
        self._pattern = pattern

    def extended(self, secrets: Iterable[str]) -> Scrubber:
        """This scrubber plus ``secrets`` (e.g. one caller's own credentials); ``self`` if none are new."""
        extra = [s for s in secrets if s and s not in self._long and s not in self._short]
        if not extra:
            return self
        combined = Scrubber()
        combined._long, combined._short, combined._pattern = self._long, self._short, self._pattern
        combined.add(*extra)
        return combined

    def scrub_text(self, text: str) -> str:
        if text in self._short:
            return REDACTED
        pattern = self._pattern
        if pattern is None:
            return text
        return pattern.sub(REDACTED, text)

    def scrub_obj(self, obj: Any) -> Any:
        """Scrub strings anywhere in JSON-like data: dict keys and values, lists, tuples."""
        if not self._long and not self._short:
            return obj
        return self._scrub(obj)

    def scrub_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        return {self.scrub_text(k): self.scrub_text(v) for k, v in headers.items()}

    def _scrub(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self.scrub_text(obj)
        if isinstance(obj, dict):
            return {self._scrub(k): self._scrub(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self._scrub(v) for v in obj]
        if isinstance(obj, tuple):
            return tuple(self._scrub(v) for v in obj)
        return obj
