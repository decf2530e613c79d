"""Client ID Metadata Documents over real HTTP (a document server the test runs on loopback), with
the SSRF guards: private and loopback hosts refused unless allowed, no redirects, size and time
caps, client_id equal to the document URL, redirect URIs from the document."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")

from codemode_portal import PortalSettings
from codemode_portal._oauth import MetadataFetcher, MetadataProblem, is_metadata_url
from portal_harness import PETSTORE, REDIRECT, Flow, RunningPortal, location_params, running_portal

SERVERS = f"""
[servers.petstore]
spec = "{PETSTORE}"
base_url = "http://127.0.0.1:9/api/v3"
"""


class Docs:
    """A loopback server of metadata documents: path -> (status, headers, body, delay)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes, float]] = {}
        self.hits: list[str] = []
        docs = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                docs.hits.append(self.path)
                status, headers, body, delay = docs.routes.get(self.path, (404, {}, b"{}", 0.0))
                time.sleep(delay)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def document(self, path: str, **fields: Any) -> str:
        url = self.base + path
        doc = {"client_id": url, "client_name": "Metadata App", "redirect_uris": [REDIRECT],
               "grant_types": ["authorization_code", "refresh_token"], "token_endpoint_auth_method": "none", **fields}
        self.routes[path] = (200, {"Content-Type": "application/json"}, json.dumps(doc).encode(), 0.0)
        return url

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def docs() -> Iterator[Docs]:
    d = Docs()
    yield d
    d.close()


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPortal]:
    extra = "allow_private_client_metadata_hosts = true\nclient_metadata_timeout_seconds = 1.0\n" \
            "client_metadata_max_bytes = 5000\nclient_metadata_cache_seconds = 0"
    with running_portal(tmp_path_factory.mktemp("portal"), SERVERS, portal=extra) as running:
        yield running


def test_a_metadata_document_client_goes_through_the_whole_flow(portal: RunningPortal, docs: Docs) -> None:
    url = docs.document("/clients/app.json")
    with Flow(portal) as flow:
        flow.client_id = url
        page = flow.consent_page()
        assert page.status_code == 200, page.text
        assert "Metadata App" in page.text and "identified by its metadata document" in page.text
        tokens = flow.tokens()
        assert tokens["access_token"].startswith("cmp_at_")
        refreshed = flow.token(grant_type="refresh_token", refresh_token=tokens["refresh_token"])
        assert refreshed.status_code == 200
    stored = portal.portal.store.find_client(url)
    assert stored is not None and stored.kind == "cimd" and stored.redirect_uris == (REDIRECT,)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("mismatch", "client_id must equal its URL"),
        ("redirect", "redirects"),
        ("oversized", "larger than 5000 bytes"),
        ("slow", "took too long"),
        ("not-json", "not JSON"),
        ("missing", "HTTP 404"),
        ("secret", "must not carry a client secret"),
        ("confidential", "is public"),
        ("bad-redirect", "only allowed for 127.0.0.1"),
    ],
)
def test_unusable_documents_get_an_error_page_never_a_redirect(
    portal: RunningPortal, docs: Docs, setup: str, message: str
) -> None:
    path = f"/bad/{setup}.json"
    url = docs.base + path
    if setup == "mismatch":
        docs.document(path, client_id=docs.base + "/someone-else.json")
    elif setup == "redirect":
        docs.routes[path] = (302, {"Location": docs.document("/good.json")}, b"", 0.0)
    elif setup == "oversized":
        docs.document(path, client_name="x" * 100, software_id="y" * 6000)
    elif setup == "slow":
        docs.routes[path] = (200, {}, json.dumps({"client_id": url, "redirect_uris": [REDIRECT]}).encode(), 2.5)
    elif setup == "not-json":
        docs.routes[path] = (200, {}, b"<html>", 0.0)
    elif setup == "secret":
        docs.document(path, client_secret="s3cret")
    elif setup == "confidential":
        docs.document(path, token_endpoint_auth_method="client_secret_basic")
    elif setup == "bad-redirect":
        docs.document(path, redirect_uris=["http://evil.example.com/cb"])
    with Flow(portal) as flow:
        flow.client_id = url
        page = flow.consent_page()
    assert page.status_code == 400 and "location" not in page.headers, page.text
    assert message in page.text


def test_redirect_uri_must_be_in_the_document(portal: RunningPortal, docs: Docs) -> None:
    url = docs.document("/clients/strict.json")
    with Flow(portal) as flow:
        flow.client_id = url
        page = flow.consent_page(redirect_uri="http://127.0.0.1:9/other")
    assert page.status_code == 400 and "location" not in page.headers


def test_loopback_documents_are_refused_unless_allowed(tmp_path: Path, docs: Docs) -> None:
    url = docs.document("/clients/private.json")
    before = len(docs.hits)
    with running_portal(tmp_path, SERVERS) as strict, Flow(strict) as flow:
        flow.client_id = url  # http:// on loopback is not even a metadata URL without the setting
        page = flow.consent_page()
        assert page.status_code == 400 and "location" not in page.headers
        flow.client_id = url.replace("http://", "https://")
        page = flow.consent_page()
        assert page.status_code == 400 and "non-public address" in page.text
    assert docs.hits[before:] == []  # the guard refused before any connection


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/c.json", "https://localhost/c.json", "https://10.1.2.3/c.json", "https://192.168.1.1/c",
        "https://172.16.0.1/c", "https://169.254.169.254/latest/meta-data", "https://[::1]/c.json",
        "https://[::ffff:127.0.0.1]/c.json", "https://0.0.0.0/c.json", "https://100.64.0.1/c", "https://[fd00::1]/c",
        "https://224.0.0.1/c",
    ],
)
def test_ssrf_guard_refuses_non_public_addresses(url: str) -> None:
    fetcher = MetadataFetcher(PortalSettings())
    with pytest.raises(MetadataProblem, match="non-public address"):
        fetcher.get(url)


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("https://app.example", "must have a path"),
        ("https://app.example/", "must have a path"),
        ("https://user:pw@app.example/c.json", "no user info"),
        ("https://app.example/c.json#x", "no user info or fragment"),
        ("https://" + "a" * 2100 + ".example/c", "too long"),
        ("https://no-such-host.invalid/c.json", "cannot resolve"),
    ],
)
def test_metadata_urls_are_checked_before_any_request(url: str, match: str) -> None:
    with pytest.raises(MetadataProblem, match=match):
        MetadataFetcher(PortalSettings()).get(url)


def test_which_client_ids_are_metadata_urls() -> None:
    strict, lax = PortalSettings(), PortalSettings(allow_private_client_metadata_hosts=True)
    assert is_metadata_url("https://app.example/c.json", strict)
    assert not is_metadata_url("http://127.0.0.1/c.json", strict)
    assert is_metadata_url("http://127.0.0.1/c.json", lax)
    assert not is_metadata_url("http://app.example/c.json", lax)
    assert not is_metadata_url("cmp_client_abc", lax)


def test_authorize_error_redirect_for_a_metadata_client(portal: RunningPortal, docs: Docs) -> None:
    url = docs.document("/clients/scoped.json")
    with Flow(portal) as flow:
        flow.client_id = url
        r = flow.consent_page(scope="nonsense:read")
    assert location_params(r)["error"] == "invalid_scope"
