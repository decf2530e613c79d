"""Plain one-paragraph text from what specs put in summaries and descriptions (HTML included)."""

from __future__ import annotations

import html
import re
from typing import Any

__all__ = ["BIDI_CONTROLS", "HTML_TAGS", "SURROGATE_ESCAPE", "plain_text", "shown_name", "without_lone_surrogates"]

# Tag names removed from summaries and descriptions. Only these: ``<owner>/<repo>`` in a
# description is a placeholder, not markup, and stays.
HTML_TAGS = frozenset(
    {
        "a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "div", "dl", "dt", "em", "h1", "h2", "h3",
        "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "s", "samp", "small",
        "span", "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul",
        "var", "section", "article", "details", "summary", "figure", "caption", "font", "center",
    }
)  # fmt: skip
_TAG = re.compile(r"</?([A-Za-z][A-Za-z0-9]*)\b[^<>]*?/?>")
_ENTITY = re.compile(r"&(#\d+|#x[0-9A-Fa-f]+|[A-Za-z][A-Za-z0-9]*);")
_BLANKS = re.compile(r"[ \t]+")
# Bidirectional embeddings, overrides and isolates: in a spec's text they only serve to make what
# a person reads in a client differ from what is there ("Trojan Source"); marks (LRM, RLM) stay.
BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")


def shown_name(value: Any) -> str:
    """A name from a spec (a tag) as answers show it: text, without bidirectional controls."""
    return BIDI_CONTROLS.sub("", str(value))


def _untag(m: re.Match[str]) -> str:
    return " " if m.group(1).lower() in HTML_TAGS else m.group(0)


def plain_text(value: Any, limit: int = 2000) -> str:
    """``<p>Create a <b>refund</b>.</p>`` -> ``Create a refund.``; non-strings give ``""``."""
    if not isinstance(value, str):
        return ""
    text = value
    if "<" in text:
        text = _TAG.sub(_untag, text)
    if "&" in text and _ENTITY.search(text):
        text = html.unescape(text)
    if text != value:
        text = "\n".join(_BLANKS.sub(" ", line).strip() for line in text.splitlines())
        text = re.sub(r"\n{3,}", "\n\n", text)
    return BIDI_CONTROLS.sub("", text).strip()[:limit]  # after unescaping: &#x202e; is one too


# A JSON escape of a surrogate code point (``"\\ud800"``): valid JSON, but alone not encodable as UTF-8.
SURROGATE_ESCAPE = re.compile(r"\\[uU]0*[dD][89a-fA-F][0-9a-fA-F]{2}")


def without_lone_surrogates(node: Any) -> Any:
    """Parsed JSON with every lone surrogate in its strings and keys replaced by U+FFFD (pairs are kept)."""
    if isinstance(node, str):
        return node if node.isascii() else node.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(node, dict):
        return {without_lone_surrogates(k): without_lone_surrogates(v) for k, v in node.items()}
    if isinstance(node, list):
        return [without_lone_surrogates(v) for v in node]
    return node
