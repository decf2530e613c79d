"""Reading spec documents: files, folders and URLs, JSON or YAML, with external ``$ref``s.

A :class:`DocumentStore` loads the root document and, on demand, every document
an external ``$ref`` points at. References are resolved one hop at a time, so a
cyclic spec never recurses and nothing is inlined.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import yaml

from ._errors import SpecError
from ._text import SURROGATE_ESCAPE, without_lone_surrogates

__all__ = ["DocumentStore", "Located", "display_uri", "find_root_in_folder", "parse_document"]


MAX_SPEC_BYTES = 100_000_000  # per document; the largest real spec in the corpus (GitHub's) is 13 MB
FETCH_DEADLINE = 120.0


def display_uri(uri: str) -> str:
    """``uri`` as messages show it: a spec URL may carry credentials (``https://user:pass@…``,
    ``?token=…``), and messages reach logs, the portal's public ``/healthz`` and its index page."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not (parts.password or parts.username or parts.query):
        return uri
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.password else ("***@" if parts.username else "")
    query = "&".join(f"{k.partition('=')[0]}=***" for k in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, user + host, parts.path, query, ""))


_ROOT_NAMES = ("openapi.yaml", "openapi.yml", "openapi.json", "swagger.yaml", "swagger.yml", "swagger.json")


class _Loader(yaml.CSafeLoader):
    """Safe YAML loader that keeps every mapping key a string (response codes like ``200``)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[str, Any]:
    pairs = loader.construct_pairs(node, deep=True)
    return {k if isinstance(k, str) else str(k).lower() if isinstance(k, bool) else str(k): v for k, v in pairs}


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# Timestamps stay strings: a spec's example dates must not become datetime objects.
_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.CSafeLoader.yaml_implicit_resolvers.items()
}


def parse_document(data: bytes, where: str) -> Any:
    """Parse JSON or YAML bytes. Errors name the source and the line.

    A lone surrogate escape (``"\\ud800"``: valid JSON, not encodable as UTF-8) becomes U+FFFD;
    left in, it would fail every answer that shows the text it is in.
    """
    text = data.decode("utf-8-sig", errors="replace")
    doc = _parse_text(text, where)
    return without_lone_surrogates(doc) if SURROGATE_ESCAPE.search(text) else doc


def _parse_text(text: str, where: str) -> Any:
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            if where.endswith(".json"):
                raise SpecError(
                    f"{where} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.",
                    code="spec.parse",
                    where=where,
                ) from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        pos = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(
            f"{where} is neither valid JSON nor valid YAML: {problem}{pos}.", code="spec.parse", where=where
        ) from None


def find_root_in_folder(folder: Path) -> Path:
    """Pick the root document of a multi-file spec."""
    for name in _ROOT_NAMES:
        if (folder / name).is_file():
            return folder / name
    candidates: list[Path] = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in {".yaml", ".yml", ".json"} and p.is_file():
            head = p.read_bytes()[:4096].decode("utf-8", errors="replace")
            if "openapi" in head or "swagger" in head:
                candidates.append(p)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise SpecError(
            f"{folder} is a folder with no OpenAPI or Swagger root document in it "
            f"(looked for {', '.join(_ROOT_NAMES)} and any top-level file mentioning 'openapi').",
            code="spec.not_found",
            where=str(folder),
        )
    names = ", ".join(p.name for p in candidates)
    raise SpecError(
        f"{folder} holds several candidate root documents ({names}); pass the file itself.",
        code="spec.ambiguous_root",
        where=str(folder),
    )


@dataclass(frozen=True, slots=True)
class Located:
    """A node together with the document URI it came from (for relative refs)."""

    node: Any
    uri: str
    pointer: str


def _pointer_get(doc: Any, pointer: str) -> Any:
    node = doc
    if pointer in ("", "/"):
        return node
    for raw in pointer.lstrip("/").split("/"):
        part = unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict):
            if part not in node:
                raise KeyError(part)
            node = node[part]
        elif isinstance(node, list):
            node = node[int(part)]
        else:
            raise KeyError(part)
    return node


@dataclass
class DocumentStore:
    """Every document of one spec, keyed by absolute URI (``file:///…`` or ``https://…``)."""

    root_uri: str
    documents: dict[str, Any] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    fetch_timeout: float = 30.0  # per connect, read or write; FETCH_DEADLINE bounds a whole download

    @classmethod
    def open(cls, source: str) -> DocumentStore:
        if source.startswith(("http://", "https://")):
            store = cls(root_uri=source)
        else:
            path = Path(source).expanduser()
            if not path.exists():
                raise SpecError(f"spec not found: {source} does not exist.", code="spec.not_found", where=source)
            if path.is_dir():
                path = find_root_in_folder(path)
            store = cls(root_uri=path.resolve().as_uri())
        store.load(store.root_uri)
        return store

    @property
    def root(self) -> Any:
        return self.documents[self.root_uri]

    def content_hash(self) -> str:
        h = hashlib.sha256()
        for uri in sorted(self.hashes):
            h.update(uri.encode())
            h.update(self.hashes[uri].encode())
        return h.hexdigest()

    def _read(self, uri: str) -> bytes:
        shown = display_uri(uri)
        if uri.startswith("file://"):
            path = Path(unquote(urlsplit(uri).path))
            try:
                return path.read_bytes()
            except FileNotFoundError:
                raise SpecError(f"{path} does not exist.", code="spec.not_found", where=str(path)) from None
            except OSError as exc:
                raise SpecError(
                    f"cannot read {path}: {exc.strerror}.", code="spec.unreadable", where=str(path)
                ) from None
        import httpx  # imported lazily: only URL sources need it

        try:
            return self._fetch(uri, shown)
        except httpx.HTTPError as exc:
            detail = str(exc).replace(uri, shown)
            raise SpecError(
                f"cannot fetch the spec from {shown}: {type(exc).__name__}: {detail}.",
                code="spec.unreachable",
                where=shown,
            ) from None

    def _fetch(self, uri: str, shown: str) -> bytes:
        """The body of ``uri``, at most ``MAX_SPEC_BYTES``, within ``FETCH_DEADLINE`` seconds in all: a
        server that drips its answer, or sends gigabytes, must not hold up or exhaust whoever loads it
        (the portal loads its servers' specs at start-up)."""
        import httpx

        started, deadline = time.monotonic(), FETCH_DEADLINE
        with httpx.stream("GET", uri, timeout=self.fetch_timeout, follow_redirects=True) as resp:
            if resp.status_code >= 400:
                raise SpecError(
                    f"cannot fetch the spec from {shown}: the server answered HTTP {resp.status_code}.",
                    code="spec.unreachable",
                    where=shown,
                )
            too_big = SpecError(
                f"the spec at {shown} is larger than {MAX_SPEC_BYTES:,} bytes.",
                code="spec.too_large",
                where=shown,
            )
            declared = resp.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_SPEC_BYTES:
                raise too_big
            body = bytearray()
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) > MAX_SPEC_BYTES:
                    raise too_big
                if time.monotonic() - started > deadline:
                    raise SpecError(
                        f"fetching the spec from {shown} took longer than {deadline:g} s.",
                        code="spec.unreachable",
                        where=shown,
                    )
            return bytes(body)

    def load(self, uri: str) -> Any:
        if uri.startswith("file://") and not self.root_uri.startswith("file://"):
            raise SpecError(
                f"a spec fetched from {display_uri(self.root_uri)} may not refer to a local file ({uri}).",
                code="spec.local_ref_refused",
                where=uri,
            )
        if uri not in self.documents:
            data = self._read(uri)
            self.hashes[uri] = hashlib.sha256(data).hexdigest()
            where = unquote(urlsplit(uri).path) if uri.startswith("file://") else display_uri(uri)
            self.documents[uri] = parse_document(data, where)
        return self.documents[uri]

    def split_ref(self, ref: str, base_uri: str) -> tuple[str, str]:
        """``(document URI, JSON pointer)`` of a ``$ref`` written in ``base_uri``."""
        target, _, fragment = ref.partition("#")
        uri = urljoin(base_uri, target) if target else base_uri
        return uri, fragment

    def resolve(self, ref: str, base_uri: str) -> Located:
        """Follow one ``$ref``. Raises ``KeyError`` or ``SpecError`` when it dangles."""
        uri, pointer = self.split_ref(ref, base_uri)
        if uri.startswith("file://") and not base_uri.startswith("file://"):
            raise SpecError(
                f"{display_uri(base_uri)} may not refer to a local file ({uri}): a document fetched over HTTP only "
                "refers to other URLs.",
                code="spec.local_ref_refused",
                where=uri,
            )
        doc = self.load(uri)
        return Located(_pointer_get(doc, pointer), uri, pointer)

    def deref(self, node: Any, base_uri: str, *, max_hops: int = 32) -> Located:
        """Follow ``$ref`` chains (a ref to a ref …) until a non-ref node. Cycles raise SpecError."""
        seen: set[tuple[str, str]] = set()
        pointer = ""
        while isinstance(node, dict) and isinstance(node.get("$ref"), str):
            uri, pointer = self.split_ref(node["$ref"], base_uri)
            if (uri, pointer) in seen or len(seen) > max_hops:
                raise SpecError(f"$ref cycle: {node['$ref']} refers back to itself.", code="spec.ref_cycle")
            seen.add((uri, pointer))
            located = self.resolve(node["$ref"], base_uri)
            node, base_uri = located.node, located.uri
        return Located(node, base_uri, pointer)

    def short(self, uri: str) -> str:
        """A readable name for a document URI, relative to the root's folder."""
        if uri == self.root_uri:
            return ""
        root_dir = self.root_uri.rsplit("/", 1)[0] + "/"
        return unquote(uri[len(root_dir) :] if uri.startswith(root_dir) else uri)
