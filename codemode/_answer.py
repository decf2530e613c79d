"""The text of a ``search`` answer: ranked hits, a table of contents, or a clear "no match".

Every answer stays within a token budget (characters / 4). What it can hold:

* **hits** for a query: each operation's ``METHOD /path``, its compact signature and
  summary; for the first hits, the other operations on the same path
  (``also on this path: PATCH api.repos.update, DELETE api.repos.delete``), so the
  whole resource is one line away;
* **a table of contents** for ``search()`` with no query and no filter: tags (or groups)
  with operation counts and one line each;
* **a listing** for a filter alone (``tag=``, ``method=``, ``path_prefix=``): one line
  per operation;
* **no match**, saying why (only common words, unknown words, an unknown tag or
  method) with suggestions.

While the semantic ranker is still being prepared, a one-line note says the answer
comes from keyword ranking.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ._ir import ApiSpec, Operation
from ._render import describe_operation, render_schema, signature
from ._search import SearchIndex

__all__ = [
    "METHODS",
    "SearchAnswer",
    "answer_detail",
    "answer_search",
    "approx_tokens",
    "format_hit",
    "format_hits",
]

METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
FULL_HITS = 5  # hits shown with summary and siblings; later ones are compact
MAX_SIBLINGS = 6  # names on one "also on this path" line
RESERVE_TOKENS = 60  # kept free for the footer
MAX_ECHO = 80  # characters of the query repeated back in a no-match answer
MAX_TARGET_CHARS = 300  # a longer detail= target names no operation or schema
ONLY_COMMON = " (it has no word to search for: only common words, symbols or non-Latin text)"
FOOTER = "Call these inside execute(code). Full parameters and types: search(detail='api.<group>.<name>')."


def approx_tokens(text: str) -> int:
    """Token estimate used for every budget here: characters / 4."""
    return (len(text) + 3) // 4


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _echo(query: str) -> str:
    return repr(_one_line(query, MAX_ECHO))


@dataclass(frozen=True, slots=True)
class SearchAnswer:
    """The answer's text, and every operation it names (hits and their siblings)."""

    text: str
    hits: tuple[Operation, ...] = ()  # hits rendered, in rank order
    shown: tuple[Operation, ...] = ()  # hits rendered plus the siblings named
    is_error: bool = False


def format_hit(op: Operation, *, compact: bool = False, denied: str | None = None) -> str:
    """One hit; ``denied`` (why the caller may not call it) is shown on the first line."""
    head = op.label if denied is None else f"{op.label}  [not callable: {denied}]"
    head += f"\n  {signature(op, max_optional=3 if compact else 6)}"
    if op.summary and not compact:
        head += f"\n  # {_one_line(op.summary, 140)}"
    if op.deprecated:
        head += "  [deprecated]"
    return head


def _sibling_line(siblings: list[Operation]) -> str:
    names = [f"{o.method.upper()} api.{o.key}" for o in siblings[:MAX_SIBLINGS]]
    more = f", …{len(siblings) - MAX_SIBLINGS} more" if len(siblings) > MAX_SIBLINGS else ""
    return "  also on this path: " + ", ".join(names) + more


def render_hits(
    hits: list[Operation],
    *,
    budget_tokens: int,
    siblings: Callable[[Operation], list[Operation]] | None = None,
    denial: Callable[[Operation], str | None] | None = None,
    note: str = "",
) -> SearchAnswer:
    """Hits, best first, until the budget is spent; siblings of the first hits on one line each."""
    parts: list[str] = [note] if note else []
    used = approx_tokens(note) + approx_tokens(FOOTER) + RESERVE_TOKENS
    rendered: list[Operation] = []
    named: list[Operation] = []
    listed = {op.key for op in hits}
    for i, op in enumerate(hits):
        block = format_hit(op, compact=i >= FULL_HITS, denied=denial(op) if denial is not None else None)
        extra: list[Operation] = []
        if siblings is not None and i < FULL_HITS:
            extra = [o for o in siblings(op) if o.key not in listed]
            if extra:
                block += "\n" + _sibling_line(extra)
        cost = approx_tokens(block) + 1
        if rendered and used + cost > budget_tokens:
            break
        parts.append(block)
        used += cost
        rendered.append(op)
        named += extra[:MAX_SIBLINGS]
        listed.update(o.key for o in extra)
    more = len(hits) - len(rendered)
    if more:
        parts.append(f"({more} more not shown: budget {budget_tokens} tokens)")
    parts.append(FOOTER)
    return SearchAnswer("\n".join(parts), tuple(rendered), tuple(rendered + named))


def format_hits(
    spec: ApiSpec,
    query: str,
    hits: list[Operation],
    *,
    budget_tokens: int,
    suggestions: list[str],
    denial: Callable[[Operation], str | None] | None = None,
) -> str:
    """Hits as text (no siblings); a no-match text with ``suggestions`` when there are none."""
    if not hits:
        return _no_match(spec, query, suggestions, "")
    return render_hits(hits, budget_tokens=budget_tokens, denial=denial).text


def _no_match(spec: ApiSpec, query: str, suggestions: list[str], why: str, closest: Sequence[Operation] = ()) -> str:
    tip = f" Try: {', '.join(suggestions)}." if suggestions else ""
    near = ", ".join(f"api.{o.key} ({o.label})" for o in closest)
    near = f" Nearest in meaning, though not a match: {near}." if near else ""
    return (
        f"No operation of {spec.title} matches {_echo(query)}{why}.{near}{tip} Search with other words, "
        "search() for a table of contents, a tag=, method= or path_prefix= filter, "
        "or code= to scan spec.operations."
    )


def _listing(
    ops: list[Operation], budget_tokens: int, head: str, denial: Callable[[Operation], str | None] | None
) -> SearchAnswer:
    lines = [head]
    used = approx_tokens(head) + RESERVE_TOKENS
    shown: list[Operation] = []
    for op in ops:
        why = denial(op) if denial is not None else None
        line = f"{op.label}  api.{op.key}" + (f"  # {_one_line(op.summary, 80)}" if op.summary else "")
        if why is not None:
            line += f"  [not callable: {why}]"
        if shown and used + approx_tokens(line) + 1 > budget_tokens:
            break
        lines.append(line)
        used += approx_tokens(line) + 1
        shown.append(op)
    if len(shown) < len(ops):
        lines.append(f"(…{len(ops) - len(shown)} more: add a query, or narrow with method= or path_prefix=)")
    lines.append("Signatures: search(query, tag=…) ranks within these; search(detail='api.<group>.<name>').")
    return SearchAnswer("\n".join(lines), tuple(shown), tuple(shown))


def table_of_contents(index: SearchIndex, budget_tokens: int) -> SearchAnswer:
    """Tags (or groups) with operation counts and one line each, biggest first, within the budget."""
    spec = index.spec
    groups = sorted(index.groups(), key=lambda g: (-len(g.operations), g.name.lower()))
    kind = "tags" if any(op.tags for op in spec.operations) else "groups"
    head = (
        f"{spec.title}: {len(spec.operations):,} operations in {len(groups)} {kind}. "
        f"search(query) finds operations for a task; search(tag='<name>') lists one {kind[:-1]}."
    )
    lines = [head]
    used = approx_tokens(head) + RESERVE_TOKENS
    shown = 0
    for g in groups:
        what = _one_line(g.description, 100) if g.description else ", ".join(f"api.{o.key}" for o in g.operations[:3])
        if not g.description and len(g.operations) > 3:
            what += ", …"
        line = f"{g.name} ({len(g.operations)}): {what}"
        if shown and used + approx_tokens(line) + 1 > budget_tokens:
            break
        lines.append(line)
        used += approx_tokens(line) + 1
        shown += 1
    if shown < len(groups):
        rest = groups[shown:]
        n_ops = sum(len(g.operations) for g in rest)
        names = ", ".join(g.name for g in rest[:20])
        lines.append(f"(…{len(rest)} more {kind} with {n_ops:,} operations: {_one_line(names, 300)})")
    return SearchAnswer("\n".join(lines))


def answer_search(
    index: SearchIndex,
    query: str = "",
    *,
    tag: str | None = None,
    method: str | None = None,
    path_prefix: str | None = None,
    limit: int = 8,
    budget_tokens: int = 2500,
    denial: Callable[[Operation], str | None] | None = None,
) -> SearchAnswer:
    """The whole search answer for one call of the ``search`` tool (no ``detail``/``code``)."""
    spec = index.spec
    query = query or ""
    tag = (tag or "").strip() or None
    method = (method or "").strip().lower() or None
    path_prefix = (path_prefix or "").strip() or None
    if method is not None and method not in METHODS:
        return SearchAnswer(
            f"method={_echo(method)} is not an HTTP method; use one of {', '.join(m.upper() for m in METHODS)}.",
            is_error=True,
        )
    if tag is not None and not index.has_tag(tag):
        close = index.close_tags(tag)
        tip = f" Did you mean: {', '.join(close)}?" if close else ""
        return SearchAnswer(
            f"{spec.title} has no tag {_echo(tag)}.{tip} search() with no arguments lists every tag.", is_error=True
        )
    filters = (("tag", tag), ("method", method), ("path_prefix", path_prefix))
    where = ", ".join(f"{k}={_echo(v)}" for k, v in filters if v)
    if not query.strip():
        if not where:
            return table_of_contents(index, budget_tokens)
        ops = [h.operation for h in index.search("", tag=tag, method=method, path_prefix=path_prefix, limit=10**9)]
        if not ops:
            return SearchAnswer(f"No operation of {spec.title} has {where}.{_browse_tip()}")
        return _listing(ops, budget_tokens, f"{len(ops)} operations with {where}:", denial)
    hits = index.search(query, tag=tag, method=method, path_prefix=path_prefix, limit=limit)
    if not hits:
        why = _why_nothing(index, query) or (f" with {where}" if where else "")
        closest = index.closest(query, 2) if why != ONLY_COMMON and not where else []
        return SearchAnswer(_no_match(spec, query, index.suggest(query), why, closest))
    return render_hits(
        [h.operation for h in hits],
        budget_tokens=budget_tokens,
        siblings=index.siblings,
        denial=denial,
        note=_pending_note(index),
    )


def _browse_tip() -> str:
    return " search() with no arguments lists every tag."


def _why_nothing(index: SearchIndex, query: str) -> str:
    from ._search import tokenize

    if not tokenize(query):
        return ONLY_COMMON
    if not index.known_words(query):
        return " (none of its words occurs in this API)"
    return ""


def _pending_note(index: SearchIndex) -> str:
    if index.semantic_state != "building":
        return ""
    frac = index.semantic_progress
    done = f", {frac:.0%} done" if frac is not None else ""
    return f"(keyword ranking: semantic search is still being prepared{done})"


def answer_detail(
    index: SearchIndex, target: str, *, budget_chars: int, denial: Callable[[Operation], str | None] | None = None
) -> SearchAnswer:
    """``search(detail=…)``: one operation's full types, or ``schema:<Name>``; an error names what was asked.

    An operation is named by ``api.<group>.<name>``, operationId or ``METHOD /path``; a concrete path
    (``GET /repos/octo/hello``) finds its template, and names differing only in case are accepted
    when only one operation or schema matches.
    """
    spec = index.spec
    target = target.strip()
    if len(target) > MAX_TARGET_CHARS:
        return SearchAnswer(
            f"detail={_echo(target)} is {len(target):,} characters long; no operation or schema has a name that "
            "long. Use search(query) to find one.",
            is_error=True,
        )
    if target.startswith("schema:"):
        name = target.removeprefix("schema:").strip()
        if name not in spec.schemas:
            same = [n for n in spec.schemas if n.lower() == name.lower()]
            if len(same) != 1:
                close = difflib.get_close_matches(name, list(spec.schemas), n=3, cutoff=0.6)
                tip = f" Did you mean {', '.join('schema:' + c for c in close)}?" if close else ""
                return SearchAnswer(f"No schema named {_echo(name)} in {spec.title}.{tip}", is_error=True)
            name = same[0]
        return SearchAnswer(render_schema(spec, name)[:budget_chars])
    op, candidates = _named_operation(index, target)
    if op is None:
        if candidates:
            tip = " It could be: " + ", ".join(f"api.{o.key} ({o.label})" for o in candidates[:MAX_SIBLINGS]) + "."
        else:
            keys = [o.key for o in spec.operations]
            close = difflib.get_close_matches(target.removeprefix("api."), keys, n=3, cutoff=0.6)
            tip = (
                f" Did you mean {', '.join('api.' + c for c in close)}?" if close else " Use search(query) to find it."
            )
        return SearchAnswer(
            f"No operation of {spec.title} is named {_echo(target)}: detail= takes api.<group>.<name>, an "
            f"operationId or 'METHOD /path'.{tip}",
            is_error=True,
        )
    text = describe_operation(spec, op, budget_chars=budget_chars)
    why = denial(op) if denial is not None else None
    if why is not None:
        text = f"[not callable with your access: {why}]\n{text}"
    return SearchAnswer(text, (op,), (op,))


def _named_operation(index: SearchIndex, target: str) -> tuple[Operation | None, list[Operation]]:
    """The operation ``target`` names, else ``None`` and the operations it might mean (a bare path's methods)."""
    spec = index.spec
    key = target.removeprefix("api.")
    method, path = [*target.split(None, 1), ""][:2]  # any whitespace between METHOD and path
    method, path = method.lower(), path.strip()
    for op in spec.operations:
        if op.key == key or op.operation_id == target or (path and op.method == method and op.path == path):
            return op, []
    same_but_case = [o for o in spec.operations if key.lower() in (o.key.lower(), (o.operation_id or "").lower())]
    if len(same_but_case) == 1:
        return same_but_case[0], []
    if path and method in METHODS:
        on_path = index.path_operations(path)
        found = [o for o in on_path if o.method == method]
        # 'POST /user' where /user has only GET and PATCH names neither: say what the path has.
        return (found[0], []) if found else (None, on_path)
    if target.startswith("/") or "://" in target:
        found = index.references(target)
        return (found[0], []) if len(found) == 1 else (None, found)
    return None, []
