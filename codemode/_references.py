"""Operations a query names outright: ``api.repos.update``, ``repos/update``, ``PATCH /repos/{owner}/{repo}``,
``/repos/octo/hello/pulls/42`` or a URL.

A model pastes what it saw (a name from an earlier answer, a path from an error or the API's docs,
a whole traceback); ranking by meaning would bury the one operation it named under look-alikes,
so :class:`References` finds them first and search puts them on top.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

from ._ir import Operation

__all__ = ["MAX_REFERENCES", "References"]

MAX_REFERENCES = 8  # operations one query can name outright (a traceback names a few)
MAX_QUERY_CHARS = 4000  # characters of a query looked at (a 100 kB paste costs what a page costs)
MAX_TOKENS = 200  # tokens of a query looked at for names and paths
MAX_PREFIX_SEGMENTS = 3  # leading segments of a URL's path skipped to find a template (a server's /client/v4)
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
_API_NAME = re.compile(r"\bapi\.([A-Za-z_]\w*)\.([A-Za-z_]\w*)")
_METHOD_PATH = re.compile(r"\b(" + "|".join(METHODS) + r")\s+(\S*/\S*)", re.IGNORECASE)
_SCHEME_HOST = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/\s]*")
_TRIM = "\"'`()[]<>,;:"
# Looks like an identifier, not a plain word: an underscore, a separator between letters or digits
# ("repos/get", "zones-get"), or camelCase, and a letter somewhere. Digits alone do not count: an
# operationId "1" or "2024" would otherwise name an operation in every sentence with that number.
_IDENTIFIER = re.compile(r"_|[A-Za-z0-9][/.\-]+[A-Za-z0-9]|[a-z][A-Z]")
_LETTER = re.compile(r"[A-Za-z]")


def _identifier_like(token: str) -> bool:
    return bool(_IDENTIFIER.search(token) and _LETTER.search(token))


def _segments(path: str) -> list[str]:
    path = _SCHEME_HOST.sub("", path.strip(_TRIM))
    path = re.split(r"[?#]", path, maxsplit=1)[0]
    return [s for s in path.split("/") if s]


class References:
    """Finds the operations a query names: by Python name, operationId, ``METHOD /path`` or a path."""

    def __init__(self, operations: Sequence[Operation]) -> None:
        self._ops = operations
        self._by_key = {op.key: i for i, op in enumerate(operations)}
        self._by_id: dict[str, list[int]] = defaultdict(list)  # a spec may repeat an operationId: all of them
        self._by_id_lower: dict[str, list[int]] = defaultdict(list)
        for i, op in enumerate(operations):
            if op.operation_id:
                self._by_id[op.operation_id].append(i)
                if _identifier_like(op.operation_id):  # "getPetById", "repos/get"; never a plain word ("search")
                    self._by_id_lower[op.operation_id.lower()].append(i)
        # path templates by segment count: (index, segments with None for a {parameter})
        self._templates: dict[int, list[tuple[int, list[str | None]]]] = defaultdict(list)
        for i, op in enumerate(operations):
            segs: list[str | None] = [None if "{" in s else s for s in _segments(op.path)]
            self._templates[len(segs)].append((i, segs))

    def find(self, query: str) -> list[int]:
        """Indices of the operations ``query`` names, most specific first, at most :data:`MAX_REFERENCES`."""
        query = query[:MAX_QUERY_CHARS]
        found: list[int] = []

        def add(indices: Sequence[int]) -> None:
            found.extend(i for i in indices if i not in found)

        for m in _API_NAME.finditer(query):
            i = self._by_key.get(f"{m.group(1)}.{m.group(2)}")
            if i is not None:
                add([i])
        with_method: set[str] = set()  # paths a METHOD before them has already resolved
        for m in _METHOD_PATH.finditer(query):
            named = self.match_path(m.group(2), m.group(1))
            if named:
                with_method.add(m.group(2).strip(_TRIM))
            add(named)
            if len(found) >= MAX_REFERENCES:
                return found[:MAX_REFERENCES]
        whole = query.strip()
        for token in query.split()[:MAX_TOKENS]:
            token = token.strip(_TRIM)
            folded = self._by_id_lower.get(token.lower(), [])
            if token in self._by_id and (_identifier_like(token) or token == whole):
                add(self._by_id[token])  # a plain word ("search") names an operation only as the whole query
            elif len(folded) == 1:  # an identifier-like operationId in another case ("GETPETBYID")
                add(folded)
            elif token in with_method:
                pass
            elif token.startswith("api.") and token[4:] in self._by_key:
                add([self._by_key[token[4:]]])
            elif "/" in token and (token.startswith("/") or "://" in token):
                on_path = self.match_path(token)
                # A path alone names its resource: every method. In a sentence ("add a TXT record to
                # https://…/zones/ID", "open a pull request on /repos/o/r") it is what the task is about,
                # often the parent of what to call: only its GET goes first (the answer's "also on this
                # path" line names the rest), so the task's own operation is not pushed out of the top hits.
                add(on_path if token == whole.strip(_TRIM) else self._one_of(on_path))
            if len(found) >= MAX_REFERENCES:
                break
        return found[:MAX_REFERENCES]

    def _one_of(self, on_path: list[int]) -> list[int]:
        """The GET of the best-matching template among ``on_path``, else its first operation."""
        if not on_path:
            return []
        path = self._ops[on_path[0]].path
        same = [i for i in on_path if self._ops[i].path == path]
        return [next((i for i in same if self._ops[i].method == "get"), same[0])]

    def match_path(self, path: str, method: str | None = None) -> list[int]:
        """Operations whose path template matches ``path`` (a template or a concrete path), most literal first.

        A ``{parameter}`` of the template matches any one segment; so does one in ``path``. When
        nothing matches, up to :data:`MAX_PREFIX_SEGMENTS` leading segments are skipped (a URL
        carries the server's base path: ``https://api.cloudflare.com/client/v4/zones/…``).
        """
        segs = _segments(path)
        want = method.lower() if method else None
        for skip in range(min(MAX_PREFIX_SEGMENTS, len(segs) - 1) + 1):
            found = self._match_segments(segs[skip:], want, params_only=skip == 0)
            if found:
                return found
        return []

    def _match_segments(self, segs: list[str], want: str | None, *, params_only: bool) -> list[int]:
        if not segs:
            return []
        scored: list[tuple[int, int]] = []
        for i, template in self._templates.get(len(segs), ()):
            literal = 0
            for have, seg in zip(template, segs, strict=True):
                if have is None or "{" in seg:
                    continue
                if have != seg:
                    break
                literal += 1
            else:
                only_params = params_only and all(have is None for have in template) and all("{" in seg for seg in segs)
                if (literal or only_params) and (want is None or self._ops[i].method == want):
                    scored.append((-literal, i))
        return [i for _, i in sorted(scored)]
