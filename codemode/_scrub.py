"""Secret scrubbing for everything that crosses from the host towards guest code, and for logs.

A :class:`Scrubber` knows a set of secrets (API keys, passwords, tokens, static header
values) and replaces each occurrence with ``[REDACTED]``: in text, in bytes, in nested JSON
(keys and values) and in header mappings.

What it recognises, for a secret of :data:`MIN_SUBSTRING_LENGTH` characters or more, anywhere
inside a longer string, **each character independently** in any of these spellings (so any mix
of them within one occurrence):

* the character itself;
* percent-encoded, ``%2F`` or ``%2f`` (each UTF-8 byte); a space as ``+``, and a ``+`` as a
  space (what a form decoder makes of a raw ``+``);
* a JSON string escape: ``\\u002f`` in either case (surrogate pairs for astral characters), and
  the short forms ``\\/``, ``\\"``, ``\\\\``, ``\\n``...;
* an HTML character reference: ``&#47;``, ``&#x2F;`` (leading zeros, with or without the
  ``;``) or a named one (``&sol;``, ``&amp;``...).

Bytes (:meth:`Scrubber.scrub_bytes`, for bodies before they are decoded and for binary
content) are matched in the same spellings in UTF-8 and in the body's declared charset, and
as the raw secret in UTF-16 and UTF-32 (either byte order).

What it cannot recognise: a secret the upstream transformed (reversed, split, hashed,
encrypted, base64 of a longer text that contains it, encoded twice), or spread over several
strings. Secrets shorter than :data:`MIN_SUBSTRING_LENGTH` would match ordinary text, so they
are only replaced where a whole string equals them; the server refuses such credentials at
start-up (see :func:`codemode._credentials.check_secrets`).

Matching runs on RE2 (``google-re2``): linear in the text, about twenty times faster than
``re`` on these alternations, which matters because bodies are scrubbed while the GIL is held.

Derived forms are the caller's to add: ``Basic <base64(user:pass)>`` and ``Bearer <token>``
(see :func:`basic_auth_forms`); :class:`~codemode._credentials.Credentials` adds them for the
schemes it injects.
"""

from __future__ import annotations

import base64
import codecs
import html.entities
import logging
import re
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import re2

__all__ = [
    "MIN_SUBSTRING_LENGTH",
    "REDACTED",
    "LogScrubbing",
    "Scrubber",
    "basic_auth_forms",
    "log_scrubbing",
]

REDACTED = "[REDACTED]"
MIN_SUBSTRING_LENGTH = 6
_RE2_MAX_MEM = 256 << 20  # RE2's compile and DFA budget for one matcher
_EXTENDED_CACHE = 32  # derived scrubbers kept (one per set of caller secrets)
_WIDE_ENCODINGS = ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be")
_JSON_SHORT = {"/": "/", '"': '"', "\\": "\\", "\b": "b", "\f": "f", "\n": "n", "\r": "r", "\t": "t"}


def basic_auth_forms(username: str, password: str) -> list[str]:
    """The secrets that HTTP basic credentials produce: the password, the pair, its base64."""
    pair = f"{username}:{password}"
    encoded = base64.b64encode(pair.encode("utf-8")).decode("ascii")
    return [password, pair, encoded, f"Basic {encoded}"]


def _hex(value: int, width: int) -> str:
    """``value`` as hex digits matching either case: 0x2f -> ``2[fF]``."""
    return "".join(f"[{d.lower()}{d.upper()}]" if d.isalpha() else d for d in f"{value:0{width}x}")


def _entity_names() -> dict[str, list[str]]:
    names: dict[str, list[str]] = {}
    for name, value in html.entities.html5.items():
        if len(value) == 1:
            names.setdefault(value, []).append(name)
    return names


_ENTITIES = _entity_names()


def _char_forms(char: str) -> list[str]:
    """Regex alternatives (already escaped) for one character of a secret."""
    code = ord(char)
    forms = [re.escape(char)]
    forms.append("".join("%" + _hex(b, 2) for b in char.encode("utf-8", "surrogatepass")))
    if char == " ":
        forms.append(r"\+")
    elif char == "+":
        forms.append(" ")
    if code > 0xFFFF:
        high, low = 0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)
        forms.append(r"\\u" + _hex(high, 4) + r"\\u" + _hex(low, 4))
    else:
        forms.append(r"\\u" + _hex(code, 4))
    if char in _JSON_SHORT:
        forms.append(r"\\" + re.escape(_JSON_SHORT[char]))
    forms.append(f"&#0*{code};?")
    forms.append("&#[xX]0*" + "".join(f"[{d.lower()}{d.upper()}]" if d.isalpha() else d for d in f"{code:x}") + ";?")
    forms.extend("&" + re.escape(name) for name in _ENTITIES.get(char, ()))
    return forms


def _secret_pattern(secret: str) -> str:
    return "".join("(?:" + "|".join(_char_forms(c)) + ")" for c in secret)


def _bytes_pattern(secret: str, charsets: Iterable[str]) -> bytes:
    """The spelled-out forms of ``secret`` in ASCII-compatible encodings (raw characters in each)."""
    alternatives: list[bytes] = []
    for charset in dict.fromkeys(charsets):
        parts: list[bytes] = []
        for char in secret:
            forms = [f.encode("ascii") for f in _char_forms(char)[1:]]
            try:
                forms.insert(0, re.escape(char.encode(charset)))
            except UnicodeEncodeError:
                pass
            parts.append(b"(?:" + b"|".join(forms) + b")")
        alternatives.append(b"".join(parts))
    return b"|".join(alternatives)


def _re2_options(latin1: bool = False) -> Any:
    options = re2.Options()
    options.log_errors = False
    options.max_mem = _RE2_MAX_MEM
    if latin1:  # byte-transparent: a pattern byte matches that byte, whatever the text's encoding
        options.encoding = re2.Options.Encoding.LATIN1
    return options


class _Matcher:
    """One alternation of secret patterns on RE2 (linear time, fast: bodies are scrubbed while the
    GIL is held); Python's ``re`` only for a pattern over RE2's memory budget."""

    def __init__(self, pattern: str) -> None:
        self.source = pattern
        try:
            self.re2: Any = re2.compile(pattern, options=_re2_options())
        except re2.error:
            self.re2 = None
        self._re: re.Pattern[str] | None = None

    def _python(self) -> re.Pattern[str]:
        if self._re is None:
            self._re = re.compile(self.source)
        return self._re

    def sub(self, replacement: str, text: str) -> str:
        """Raises ``UnicodeEncodeError`` for text RE2 cannot take (the caller goes through bytes)."""
        if self.re2 is not None:
            return str(self.re2.sub(_literal(replacement), text))
        return self._python().sub(lambda _m: replacement, text)


def _compile_bytes(pattern: bytes) -> Any:
    try:
        return re2.compile(pattern, options=_re2_options(latin1=True))
    except re2.error:
        return re.compile(pattern)


def _literal(replacement: str) -> str:
    return replacement.replace("\\", "\\\\")


@dataclass(frozen=True)
class _State:
    long: frozenset[str]
    short: frozenset[str]
    pattern: _Matcher | None


class Scrubber:
    """Replaces known secrets with ``[REDACTED]``. Cheap when there are no secrets. Thread-safe."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._state = _State(frozenset(), frozenset(), None)
        self._lock = threading.Lock()
        self._bytes: dict[str, list[tuple[Any, bytes]]] = {}
        self._extended: dict[frozenset[str], Scrubber] = {}
        self.add(*secrets)

    def __repr__(self) -> str:  # never show the secrets themselves
        return f"<Scrubber secrets={len(self)}>"

    def __len__(self) -> int:
        return len(self._state.long) + len(self._state.short)

    def secrets(self) -> frozenset[str]:
        """Every secret known (for a derived scrubber; never log or show these)."""
        state = self._state
        return state.long | state.short

    def add(self, *secrets: str) -> None:
        """Learn more secrets. Empty strings are ignored."""
        with self._lock:
            state = self._state
            long = set(state.long)
            short = set(state.short)
            for secret in secrets:
                if secret:
                    (long if len(secret) >= MIN_SUBSTRING_LENGTH else short).add(secret)
            if long == state.long and short == state.short:
                return
            pattern = None
            if long:
                ordered = sorted(long, key=lambda s: (-len(s), s))
                pattern = _Matcher("|".join(_secret_pattern(s) for s in ordered))
            # Publish the new state in one assignment: readers never see a half build.
            self._state = _State(frozenset(long), frozenset(short), pattern)
            self._bytes = {}

    def extended(self, secrets: Iterable[str]) -> Scrubber:
        """This scrubber plus ``secrets`` (e.g. one caller's own credentials); ``self`` if none are new."""
        known = self.secrets()
        extra = frozenset(s for s in secrets if s and s not in known)
        if not extra:
            return self
        combined = self._extended.get(extra)
        if combined is None or combined.secrets() != known | extra:
            combined = Scrubber([*known, *extra])
            if len(self._extended) >= _EXTENDED_CACHE:
                self._extended = {}
            self._extended = {**self._extended, extra: combined}
        return combined

    # -- text ------------------------------------------------------------------------
    def scrub_text(self, text: str) -> str:
        state = self._state
        if text in state.short:
            return REDACTED
        if state.pattern is None:
            return text
        try:
            return state.pattern.sub(REDACTED, text)
        except UnicodeEncodeError:  # lone surrogates (JSON allows them): the same spellings, as bytes
            scrubbed = self.scrub_bytes(text.encode("utf-8", "surrogatepass"), "utf-8")
            return scrubbed.decode("utf-8", "surrogatepass")

    def scrub_obj(self, obj: Any) -> Any:
        """Scrub strings anywhere in JSON-like data: dict keys and values, lists, tuples."""
        if not len(self):
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

    # -- bytes -----------------------------------------------------------------------
    def scrub_bytes(self, data: bytes, charset: str | None = None) -> bytes:
        """Scrub undecoded bytes: UTF-8 and ``charset`` spellings, the raw secret in UTF-16/32."""
        if not self._state.long or not data:
            return data
        for pattern, replacement in self._bytes_patterns(_codec_name(charset)):
            data = pattern.sub(replacement, data)
        return data

    def _bytes_patterns(self, charset: str) -> list[tuple[Any, bytes]]:
        cached = self._bytes.get(charset)
        if cached is None:
            ordered = sorted(self._state.long, key=lambda s: (-len(s), s))
            narrow = ["utf-8", charset] if _ascii_compatible(charset) else ["utf-8"]
            cached = [(_compile_bytes(b"|".join(_bytes_pattern(s, narrow) for s in ordered)), REDACTED.encode("ascii"))]
            for wide in _WIDE_ENCODINGS:
                raw = b"|".join(re.escape(s.encode(wide, "surrogatepass")) for s in ordered)
                cached.append((_compile_bytes(raw), REDACTED.encode(wide)))
            self._bytes = {**self._bytes, charset: cached}
        return cached


def _codec_name(charset: str | None) -> str:
    try:
        return codecs.lookup(charset or "utf-8").name
    except LookupError:
        return "utf-8"


def _ascii_compatible(charset: str) -> bool:
    try:
        return "A=%;&#\\".encode(charset) == b"A=%;&#\\"
    except (LookupError, UnicodeError):
        return False


# -- logs ----------------------------------------------------------------------------

_CURRENT: ContextVar[Scrubber | None] = ContextVar("codemode_log_scrubber", default=None)


class LogScrubbing(logging.Filter):
    """A logging filter that scrubs each record's message, arguments and traceback.

    It knows the scrubbers of every registered server (weakly: a server that goes away is
    forgotten) plus the one of the execution in progress (:meth:`current`, e.g. a caller's own
    credentials), so that httpx's debug line with a request URL carries no key.
    """

    def __init__(self) -> None:
        super().__init__()
        self._scrubbers: weakref.WeakSet[Scrubber] = weakref.WeakSet()
        self._lock = threading.Lock()

    def register(self, scrubber: Scrubber) -> None:
        with self._lock:
            self._scrubbers.add(scrubber)

    def unregister(self, scrubber: Scrubber) -> None:
        with self._lock:
            self._scrubbers.discard(scrubber)

    @staticmethod
    @contextmanager
    def current(scrubber: Scrubber) -> Iterator[None]:
        """Also scrub with ``scrubber`` for what is logged inside the block (and tasks it starts)."""
        token = _CURRENT.set(scrubber)
        try:
            yield
        finally:
            _CURRENT.reset(token)

    def _all(self) -> list[Scrubber]:
        current = _CURRENT.get()
        with self._lock:
            registered = list(self._scrubbers)
        return [*registered, *([current] if current is not None else [])]

    def scrub(self, text: str) -> str:
        for scrubber in self._all():
            text = scrubber.scrub_text(text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        scrubbers = self._all()
        if not any(len(s) for s in scrubbers):
            return True
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg, record.args = self.scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        return True


#: The process-wide log filter (installed by :func:`log_scrubbing`).
LOG_FILTER = LogScrubbing()
_LOGGERS = ("codemode", "httpx", "httpcore", "mcp", "uvicorn", "authlib")


def log_scrubbing(scrubber: Scrubber) -> LogScrubbing:
    """Scrub ``scrubber``'s secrets from every record of the loggers that can see requests.

    The filter sits on those loggers and on every handler of the root logger, so records of
    child loggers (``httpcore.http11``) are covered wherever they end up.
    """
    LOG_FILTER.register(scrubber)
    for name in _LOGGERS:
        _attach(logging.getLogger(name))
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and name.split(".", 1)[0] in _LOGGERS:
            _attach(logger)
    for handler in logging.root.handlers:
        if LOG_FILTER not in handler.filters:
            handler.addFilter(LOG_FILTER)
    return LOG_FILTER


def _attach(logger: logging.Logger) -> None:
    if LOG_FILTER not in logger.filters:
        logger.addFilter(LOG_FILTER)
