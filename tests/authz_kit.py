"""Checks shared by the black-box authorization suite (tests/test_portal_authz*.py).

Everything here looks at what a client sees over HTTP: RFC 6749 §5.2 error bodies, RFC 6750/9728
challenges, redirects with RFC 9207 ``iss``, HTML error pages; and a loopback HTTP server of
client metadata documents that can be slow, huge, redirecting or wrong, and records every hit.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from portal_harness import REDIRECT, Flow, RunningPortal

__all__ = [
    "ACCEPT",
    "INIT",
    "OAUTH_ERRORS",
    "DocServer",
    "LoopbackSpy",
    "assert_error_page",
    "assert_no_internals",
    "assert_oauth_error",
    "assert_plain_description",
    "challenge",
    "expire",
    "mcp_post",
    "new_flow",
    "redirect_query",
]

# Every error code a client may meet at these endpoints (RFC 6749, 6750, 7009, 7591, 8707).
OAUTH_ERRORS = {
    "invalid_request", "invalid_client", "invalid_grant", "unauthorized_client", "unsupported_grant_type",
    "invalid_scope", "access_denied", "unsupported_response_type", "server_error", "temporarily_unavailable",
    "unsupported_token_type", "invalid_redirect_uri", "invalid_client_metadata", "invalid_target", "invalid_token",
    "insufficient_scope",
}  # fmt: skip
# RFC 6749 §5.2: error_description is %x20-21 / %x23-5B / %x5D-7E (printable ASCII without '"' and '\').
DESCRIPTION = re.compile(r'^[\x20\x21\x23-\x5b\x5d-\x7e]*$')
# What an internal detail looks like when it leaks: stack traces, source paths, library and class names.
INTERNALS = re.compile(
    r"Traceback|File \"|\.py\b|site-packages|/work/|(?i:sqlalchemy|psycopg|sqlite3?\b|authlib|starlette|pydantic)|"
    r"Exception\b|Error\(|object at 0x|\bNone\b|KeyError|TypeError|ValueError|AttributeError|AssertionError"
)
# What authlib's own descriptions look like (a Python list, quoted identifiers, its phrasing): a
# client must only ever see the portal's plain sentences (codemode_portal/_oauth/_descriptions.py).
AUTHLIBISMS = re.compile(
    r"\['|'\]|\b(?:Missing|Invalid|Multiple|Unsupported) '|There is no '|cannot authenticate with methods|"
    r"not supported by client|is not supported$|Code challenge failed|resource owner or authorization server|"
    r"^(?:token|code|id_token|none)$"
)
ACCEPT = {"Accept": "application/json, text/event-stream"}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "authz-suite", "version": "1"}}}


def assert_no_internals(text: str) -> None:
    found = INTERNALS.search(text)
    assert found is None, f"internal detail {found.group(0)!r} leaked in: {text[:600]}"


def assert_plain_description(desc: object) -> str:
    """An error_description a person can act on: present, RFC 6749 §5.2 characters, no internals,
    none of authlib's developer phrasing."""
    assert isinstance(desc, str) and desc.strip(), f"no error_description: {desc!r}"
    assert DESCRIPTION.match(desc), f"error_description outside RFC 6749 charset: {desc!r}"
    assert_no_internals(desc)
    found = AUTHLIBISMS.search(desc)
    assert found is None, f"authlib's own wording {found.group(0)!r} in: {desc!r}"
    return desc


def assert_oauth_error(r: httpx.Response, status: int, error: str) -> dict[str, Any]:
    """An RFC 6749 §5.2 error response: JSON object, known code, clean description, no-store."""
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers.get("content-type")
    assert "no-store" in r.headers.get("cache-control", ""), r.headers
    body = r.json()
    assert isinstance(body, dict) and body.get("error") == error, body
    assert set(body) <= {"error", "error_description", "error_uri"}, body
    assert body["error"] in OAUTH_ERRORS
    assert_plain_description(body.get("error_description"))
    assert_no_internals(r.text)
    return body


def assert_error_page(r: httpx.Response, status: int, *, says: str | None = None) -> None:
    """An HTML error page: never a redirect, no stack trace, security headers on."""
    assert r.status_code == status, (r.status_code, r.headers.get("location"), r.text[:300])
    assert "location" not in r.headers
    assert r.headers.get("content-type", "").startswith("text/html")
    assert "frame-ancestors 'none'" in r.headers.get("content-security-policy", "")
    main = r.text.split("<main", 1)[-1]
    assert_no_internals(main)
    if says is not None:
        assert says in r.text, r.text[:2000]


def redirect_query(r: httpx.Response, *, to: str = REDIRECT) -> dict[str, str]:
    """The parameters of an authorization response redirect; each one present once; ``iss`` always."""
    assert r.status_code == 302, (r.status_code, r.text[:500])
    location = r.headers["location"]
    assert location.startswith(to + "?"), location
    multi = parse_qs(urlsplit(location).query, keep_blank_values=True)
    assert all(len(v) == 1 for v in multi.values()), f"a parameter appears twice: {multi}"
    q = {k: v[0] for k, v in multi.items()}
    assert "iss" in q, f"RFC 9207: no iss in {location}"
    if "error" in q:
        assert q["error"] in OAUTH_ERRORS and "code" not in q, q
        assert_plain_description(q.get("error_description"))
    return q


def challenge(r: httpx.Response) -> dict[str, str]:
    """``WWW-Authenticate: Bearer k="v", …`` as a dict (and ``scheme``)."""
    raw = r.headers.get("www-authenticate", "")
    scheme, _, rest = raw.partition(" ")
    out = {"scheme": scheme}
    for m in re.finditer(r'(\w+)="((?:[^"\\]|\\.)*)"', rest):
        out[m.group(1)] = m.group(2)
    return out


def mcp_post(portal: RunningPortal, path: str, token: str | None = None, *, body: Any = None,
             headers: dict[str, str] | None = None, params: dict[str, str] | None = None) -> httpx.Response:
    """One MCP ``initialize`` (or ``body``) POST to ``path`` with ``Authorization: Bearer token``."""
    h = {**ACCEPT, **({"Authorization": f"Bearer {token}"} if token is not None else {}), **(headers or {})}
    with portal.http() as http:
        return http.post(path, json=INIT if body is None else body, headers=h, params=params)


def new_flow(portal: RunningPortal, **meta: Any) -> Flow:
    """A browser + public client, registered by RFC 7591."""
    flow = Flow(portal)
    flow.register(**meta)
    return flow


def expire(portal: RunningPortal, table: str, **where: Any) -> None:
    """Move ``expires_at`` of matching rows into the past (the only way to age a token in a test
    without waiting for it; the portal is then only observed over HTTP)."""
    from codemode_portal._store import _schema as t
    from sqlalchemy import update

    tab = getattr(t, table)
    cond = [tab.c[k] == v for k, v in where.items()]
    with portal.portal.store._engine.begin() as c:  # type: ignore[attr-defined]
        c.execute(update(tab).where(*cond).values(expires_at=time.time() - 5))


# -- loopback servers ---------------------------------------------------------------------------
@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False  # no Content-Length: stream the body in chunks
    drip: float = 0.0  # seconds between 16-byte chunks (a slow document)


class DocServer:
    """A loopback HTTP server of client metadata documents that records every request."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.routes: dict[str, Route] = {}
        self.hits: list[str] = []
        docs = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                docs.hits.append(self.path)
                route = docs.routes.get(self.path, Route(404, b'{"error":"not found"}'))
                try:
                    self.send_response(route.status)
                    for k, v in route.headers.items():
                        self.send_header(k, v)
                    if route.chunked or route.drip:
                        self.send_header("Transfer-Encoding", "chunked")
                        self.send_header("Connection", "close")
                        self.end_headers()
                        step = 16 if route.drip else 4096
                        for i in range(0, len(route.body), step):
                            part = route.body[i:i + step]
                            self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                            self.wfile.flush()
                            if route.drip:
                                time.sleep(route.drip)
                        self.wfile.write(b"0\r\n\r\n")
                    else:
                        self.send_header("Content-Length", str(len(route.body)))
                        self.send_header("Connection", "close")
                        self.end_headers()
                        self.wfile.write(route.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: Any) -> None:
                return None

        family = socket.AF_INET6 if ":" in host else socket.AF_INET

        class Server(ThreadingHTTPServer):
            address_family = family
            daemon_threads = True

        self.server = Server((host, 0), Handler)
        port = self.server.server_address[1]
        self.host = host
        self.port = port
        self.base = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def document(self, path: str, *, url: str | None = None, **fields: Any) -> str:
        """Serve a valid public-client document at ``path`` (``client_id`` = its URL unless overridden)."""
        url = url or self.base + path
        doc = {"client_id": url, "client_name": "Metadata App", "redirect_uris": [REDIRECT],
               "grant_types": ["authorization_code", "refresh_token"], "token_endpoint_auth_method": "none",
               **fields}  # fmt: skip
        self.routes[path] = Route(200, json.dumps(doc).encode(), {"Content-Type": "application/json"})
        return self.base + path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class LoopbackSpy:
    """Listening sockets on 127.0.0.1 and ::1 (same port where possible) that count connections:
    proof that a refused request never left the portal."""

    def __init__(self) -> None:
        self.connections = 0
        self._socks: list[socket.socket] = []
        self._stop = threading.Event()
        v4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        v4.bind(("127.0.0.1", 0))
        self.port = v4.getsockname()[1]
        self._socks.append(v4)
        try:
            v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            v6.bind(("::1", self.port))
            self._socks.append(v6)
        except OSError:
            pass
        self._threads = []
        for s in self._socks:
            s.listen(16)
            s.settimeout(0.1)
            t = threading.Thread(target=self._accept, args=(s,), daemon=True)
            t.start()
            self._threads.append(t)

    def _accept(self, s: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = s.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(2)
        for s in self._socks:
            s.close()


@contextmanager
def spying() -> Iterator[LoopbackSpy]:
    spy = LoopbackSpy()
    try:
        yield spy
    finally:
        spy.close()


def random_state() -> str:
    return "st-" + secrets.token_urlsafe(8)


Check = Callable[[httpx.Response], None]
