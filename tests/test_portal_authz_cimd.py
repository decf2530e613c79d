"""Black-box authorization suite, part 2: Client ID Metadata Documents over real HTTP.

A ``client_id`` that is an https URL makes the portal fetch it. The guard against server-side
request forgery is checked from outside: for every loopback, private, link-local, unique-local,
IPv4-mapped or oddly spelled address (and names resolving to loopback), the authorization request
gets an error page and a listener on that address sees no connection at all. With private hosts
allowed (as in tests), a loopback document server plays hostile documents: oversized (with and
without Content-Length), slow (dripping or silent), redirecting, a ``client_id`` that differs from
the document URL, not JSON, carrying a secret or a confidential auth method, unsafe redirect URIs.
A valid document then goes through the whole flow, so the refusals are not vacuous.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")

from authz_kit import DocServer, Route, assert_error_page, mcp_post, redirect_query, spying
from portal_harness import PETSTORE, REDIRECT, Flow, RunningPortal, running_portal

SERVERS = f"""
[servers.petstore]
spec = "{PETSTORE}"
base_url = "http://127.0.0.1:9/api/v3"
"""
TIMEOUT = 1.0
MAX_BYTES = 5000
# The portal must answer a hostile document well within this (time cap + one read + slack on a busy CI).
ANSWER_BOUND = 15.0


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPortal]:
    """Default settings: metadata documents only from public addresses."""
    with running_portal(tmp_path_factory.mktemp("cimd-strict"), SERVERS) as running:
        yield running


@pytest.fixture(scope="module")
def lenient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPortal]:
    extra = (f"allow_private_client_metadata_hosts = true\nclient_metadata_timeout_seconds = {TIMEOUT}\n"
             f"client_metadata_max_bytes = {MAX_BYTES}\nclient_metadata_cache_seconds = 0\n")  # fmt: skip
    with running_portal(tmp_path_factory.mktemp("cimd-lenient"), SERVERS, portal=extra) as running:
        yield running


@pytest.fixture(scope="module")
def docs() -> Iterator[DocServer]:
    d = DocServer()
    yield d
    d.close()


def authorize_as(portal: RunningPortal, client_id: str, **overrides: Any) -> Any:
    with Flow(portal) as flow:
        flow.client_id = client_id
        return flow.consent_page(**overrides)


# == SSRF: no request ever leaves for a non-public address =======================================
SSRF_HOSTS = [
    "127.0.0.1", "127.0.0.2", "localhost", "LOCALHOST", "localhost.", "127.1", "2130706433", "0x7f000001",
    "0177.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[0:0:0:0:0:ffff:127.0.0.1]",
    "10.0.0.1", "10.255.255.254", "172.16.0.1", "172.31.255.254", "192.168.0.1", "192.168.255.254",
    "169.254.169.254", "169.254.0.1", "0.0.0.0", "0", "[::]", "100.64.0.1", "198.18.0.1", "192.0.0.8",
    "[fc00::1]", "[fd12:3456:789a::1]", "[fe80::1]", "[fec0::1]", "[2002:7f00:1::1]", "[2002:a00:1::1]",
    "[2001:0:4136:e378:8000:63bf:80ff:fffe]", "224.0.0.1", "255.255.255.255",
]  # fmt: skip


@pytest.mark.parametrize("host", SSRF_HOSTS)
def test_metadata_documents_are_never_fetched_from_non_public_addresses(strict: RunningPortal, host: str) -> None:
    with spying() as spy:
        page = authorize_as(strict, f"https://{host}:{spy.port}/oauth/client.json")
        assert_error_page(page, 400)
        # refused by the guard (not by a failed connection); a name may also not resolve at all here
        assert "non-public address" in page.text or (host.lower().startswith("localhost") and
                                                     "cannot resolve" in page.text), page.text[-800:]
        time.sleep(0.05)
        assert spy.connections == 0, f"the portal connected to {host}"


def test_an_http_metadata_url_is_not_a_metadata_document_without_the_setting(strict: RunningPortal,
                                                                              docs: DocServer) -> None:  # fmt: skip
    url = docs.document("/strict/app.json")
    before = len(docs.hits)
    assert_error_page(authorize_as(strict, url), 400)
    assert docs.hits[before:] == []


# == hostile documents (private hosts allowed, as in tests) =====================================
def test_a_valid_document_goes_through_the_whole_flow(lenient: RunningPortal, docs: DocServer) -> None:
    url = docs.document("/ok/app.json", client_name="Good App")
    with Flow(lenient) as flow:
        flow.client_id = url
        page = flow.consent_page()
        assert page.status_code == 200 and "Good App" in page.text
        t = flow.tokens()
        assert mcp_post(lenient, "/mcp/petstore", t["access_token"]).status_code == 200
        assert flow.token(grant_type="refresh_token", refresh_token=t["refresh_token"]).status_code == 200


def _doc(docs: DocServer, path: str, **fields: Any) -> bytes:
    url = docs.base + path
    body = {"client_id": url, "client_name": "Hostile", "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code"], "token_endpoint_auth_method": "none", **fields}  # fmt: skip
    return json.dumps(body).encode()


def _padded(docs: DocServer, path: str) -> bytes:
    return _doc(docs, path, client_uri="https://app.example/" + "x" * (MAX_BYTES + 100))


HOSTILE: list[tuple[str, Any, str]] = [
    ("oversized-length", lambda d, p: Route(200, _padded(d, p), {"Content-Type": "application/json"}), "larger than"),
    ("oversized-chunked", lambda d, p: Route(200, _padded(d, p), {"Content-Type": "application/json"}, chunked=True),
     "larger than"),
    ("drip", lambda d, p: Route(200, _doc(d, p) + b" " * 400, {"Content-Type": "application/json"}, drip=0.25),
     "too long"),
    ("redirect-302", lambda d, p: Route(302, b"", {"Location": d.base + "/ok/app.json"}), "redirect"),
    ("redirect-307", lambda d, p: Route(307, b"", {"Location": d.base + "/ok/app.json"}), "redirect"),
    ("redirect-308", lambda d, p: Route(308, b"", {"Location": d.base + "/ok/app.json"}), "redirect"),
    ("not-found", lambda d, p: Route(404, b"{}"), "HTTP 404"),
    ("server-error", lambda d, p: Route(500, b"{}"), "HTTP 500"),
    ("not-json", lambda d, p: Route(200, b"<html>client</html>", {"Content-Type": "text/html"}), "not JSON"),
    ("json-array", lambda d, p: Route(200, b"[1, 2]"), "JSON object"),
    ("deep-json", lambda d, p: Route(200, b"[" * 2400 + b"]" * 2400), "JSON"),
    ("other-client-id", lambda d, p: Route(200, _doc(d, p, client_id=d.base + "/ok/app.json")), "client_id"),
    ("client-id-slash", lambda d, p: Route(200, _doc(d, p, client_id=d.base + p + "/")), "client_id"),
    ("client-id-case", lambda d, p: Route(200, _doc(d, p, client_id=(d.base + p).upper())), "client_id"),
    ("client-id-missing", lambda d, p: Route(200, _doc(d, p, client_id=None)), "client_id"),
    ("secret", lambda d, p: Route(200, _doc(d, p, client_secret="s3cret-value")), "secret"),
    ("confidential", lambda d, p: Route(200, _doc(d, p, token_endpoint_auth_method="client_secret_basic")),
     "token_endpoint_auth_method"),
    ("javascript-redirect", lambda d, p: Route(200, _doc(d, p, redirect_uris=["javascript:alert(1)"])),
     "redirect_uris"),
    ("http-redirect", lambda d, p: Route(200, _doc(d, p, redirect_uris=["http://app.example/cb"])), "redirect_uris"),
    ("no-redirects", lambda d, p: Route(200, _doc(d, p, redirect_uris=[])), "redirect_uris"),
]


@pytest.mark.parametrize(("name", "make", "says"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_documents_get_an_error_page_never_a_redirect(lenient: RunningPortal, docs: DocServer, name: str,
                                                              make: Any, says: str) -> None:  # fmt: skip
    path = f"/hostile/{name}.json"
    docs.routes[path] = make(docs, path)
    started = time.monotonic()
    page = authorize_as(lenient, docs.base + path)
    took = time.monotonic() - started
    assert_error_page(page, 400, says=says)
    assert took < ANSWER_BOUND, f"{name}: answered after {took:.1f} s"
    if name.startswith("redirect"):
        assert docs.hits.count("/ok/app.json") == 0 or "/ok/app.json" in docs.routes  # never followed:
        assert docs.hits[-1] == path


def test_a_silent_server_is_given_up_on_time(lenient: RunningPortal) -> None:
    """A host that accepts the connection and never answers (slowloris)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def hold() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                held.append(conn)
            except OSError:
                continue

    t = threading.Thread(target=hold, daemon=True)
    t.start()
    try:
        started = time.monotonic()
        page = authorize_as(lenient, f"http://127.0.0.1:{sock.getsockname()[1]}/silent.json")
        took = time.monotonic() - started
        assert_error_page(page, 400, says="too long")
        assert held, "the portal never connected"
        assert took < ANSWER_BOUND
    finally:
        stop.set()
        t.join(2)
        for c in held:
            c.close()
        sock.close()


def test_a_redirect_uri_missing_from_the_document_is_never_redirected_to(lenient: RunningPortal,
                                                                          docs: DocServer) -> None:  # fmt: skip
    url = docs.document("/ok/narrow.json", redirect_uris=[REDIRECT])
    for other in ("http://127.0.0.1:9/other", "https://evil.example/callback"):
        assert_error_page(authorize_as(lenient, url, redirect_uri=other), 400)


def test_metadata_clients_get_error_redirects_with_iss(lenient: RunningPortal, docs: DocServer) -> None:
    url = docs.document("/ok/errors.json")
    q = redirect_query(authorize_as(lenient, url, scope="nonsense", state="c1"))
    assert q["error"] == "invalid_scope" and q["state"] == "c1" and q["iss"] == lenient.base


@pytest.mark.parametrize("address", ["8.8.8.8", "[2606:4700::1111]", "[::ffff:8.8.8.8]", "[64:ff9b::808:808]"])
def test_the_guard_lets_public_addresses_through(address: str) -> None:
    """The other side of the guard: a public address is fetched (through a stub transport here)."""
    import httpx
    from codemode_portal import PortalSettings
    from codemode_portal._oauth import MetadataFetcher

    url = f"https://{address}/client.json"
    doc = {"client_id": url, "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json=doc)

    client = MetadataFetcher(PortalSettings(), transport=httpx.MockTransport(answer)).get(url)
    assert client.client_id == url and len(seen) == 1
