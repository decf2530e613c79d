"""Running a portal for tests: in-process on a free loopback port (uvicorn in a thread), and a
client that goes through the OAuth flow the way a browser and an MCP client would, over HTTP."""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import uvicorn
from codemode_portal import load_portal_config
from codemode_portal._app import Portal, build_portal
from upstreams import free_port

from codemode._sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[1]
PETSTORE = ROOT / "specs" / "petstore3-openapi.yaml"
HTTPBIN_SPEC = ROOT / "specs" / "httpbin-0.10.4-served-spec.json"
REDIRECT = "http://127.0.0.1:9/callback"  # never contacted: the tests read the Location header


@dataclass
class RunningPortal:
    base: str
    portal: Portal
    password: str  # the admin's ("" for a replica of a database that already had users)

    def http(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=60, trust_env=False, **kwargs)


@contextmanager
def running_portal(
    tmp_path: Path,
    servers: str,
    *,
    portal: str = "",
    env: Mapping[str, str] | None = None,
    sandbox: Sandbox | None = None,
    database_url: str | None = None,
) -> Iterator[RunningPortal]:
    """A portal serving ``servers`` (TOML ``[servers.*]`` tables) on 127.0.0.1:<free port>."""
    port = free_port()
    db = f'database_url = "{database_url}"\n' if database_url else ""
    path = tmp_path / "portal.toml"
    path.write_text(f'[portal]\nport = {port}\ndata_dir = "data"\n{db}{portal}\n\n{servers}\n')
    config = load_portal_config(path)
    if sandbox is None:
        from codemode._sandbox import LocalSandbox

        sandbox = LocalSandbox()
    built = build_portal(config, sandbox=sandbox, env=dict(env or {}))
    server = uvicorn.Server(uvicorn.Config(built.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="portal-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the portal did not start")
        time.sleep(0.02)
    try:
        # no admin password for a second replica on a database that already has users
        yield RunningPortal(f"http://127.0.0.1:{port}", built, built.admin_password or "")
    finally:
        server.should_exit = True
        thread.join(30)
        built.audit.flush()
        built.store.close()


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class _Forms(HTMLParser):
    """Every <form> of a page: its action and its inputs (name, value, type, checked)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "method": a.get("method", "get"), "inputs": []})
        elif tag in ("input", "button") and self.forms:
            self.forms[-1]["inputs"].append(a)


def forms(html: str) -> list[dict[str, Any]]:
    parser = _Forms()
    parser.feed(html)
    return parser.forms


def form_fields(form: dict[str, Any]) -> list[tuple[str, str]]:
    """What a browser submits: hidden/text inputs and checked, enabled checkboxes (no buttons)."""
    out = []
    for i in form["inputs"]:
        kind = i.get("type", "text")
        if "name" not in i or kind in ("submit", "button") or "disabled" in i:
            continue
        if kind == "checkbox" and "checked" not in i:
            continue
        out.append((i["name"], i.get("value", "")))
    return out


@dataclass
class Flow:
    """One user agent (cookies) and one OAuth client going through the authorization code flow."""

    portal: RunningPortal
    client_id: str = ""
    client_secret: str | None = None
    redirect_uri: str = REDIRECT
    verifier: str = ""
    challenge: str = ""
    browser: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.browser = self.portal.http(follow_redirects=False)
        self.verifier, self.challenge = pkce()

    def __enter__(self) -> Flow:
        return self

    def __exit__(self, *exc: object) -> None:
        self.browser.close()

    def register(self, **meta: Any) -> dict[str, Any]:
        body = {"redirect_uris": [self.redirect_uri], "client_name": "Test Client",
                "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"], **meta}
        r = self.browser.post("/register", json=body)
        assert r.status_code == 201, r.text
        data: dict[str, Any] = r.json()
        self.client_id, self.client_secret = data["client_id"], data.get("client_secret")
        return data

    def login(self, username: str = "admin", password: str | None = None) -> httpx.Response:
        page = self.browser.get("/login")
        csrf = dict(form_fields(forms(page.text)[-1]))["csrf"]
        return self.browser.post("/login", data={"username": username, "password": password or self.portal.password,
                                                 "csrf": csrf, "next": "/account"})

    def authorize_params(self, **overrides: Any) -> dict[str, str]:
        params = {"response_type": "code", "client_id": self.client_id, "redirect_uri": self.redirect_uri,
                  "state": "st-" + secrets.token_hex(4), "code_challenge": self.challenge,
                  "code_challenge_method": "S256", "resource": f"{self.portal.base}/mcp/petstore"}
        params.update({k: v for k, v in overrides.items() if v is not None})
        for k in [k for k, v in overrides.items() if v is None]:
            params.pop(k, None)
        return params

    def consent_page(self, **overrides: Any) -> httpx.Response:
        """GET /authorize (signing in on the way when needed); the consent page or an error."""
        r = self.browser.get("/authorize", params=self.authorize_params(**overrides))
        if r.status_code == 303 and r.headers["location"].startswith("/login"):
            self.login()
            r = self.browser.get("/authorize", params=self.authorize_params(**overrides))
        return r

    def decide(self, page: httpx.Response, *, approve: bool = True, uncheck: tuple[str, ...] = (),
               csrf: str | None = None) -> httpx.Response:
        form = next(f for f in forms(page.text) if f["action"] == "/authorize")
        fields = [(k, v) for k, v in form_fields(form) if not (k == "grant_scope" and v in uncheck)]
        if csrf is not None:
            fields = [(k, csrf if k == "csrf" else v) for k, v in fields]
        fields.append(("decision", "approve" if approve else "deny"))
        return post_form(self.browser, "/authorize", fields)

    def code(self, *, uncheck: tuple[str, ...] = (), **overrides: Any) -> tuple[str, dict[str, str]]:
        page = self.consent_page(**overrides)
        assert page.status_code == 200, page.text
        r = self.decide(page, uncheck=uncheck)
        assert r.status_code == 302, r.text
        q = {k: v[0] for k, v in parse_qs(urlsplit(r.headers["location"]).query).items()}
        assert "code" in q, q
        return q["code"], q

    def token(self, **form: str) -> httpx.Response:
        data = {"client_id": self.client_id, **form}
        return self.browser.post("/token", data=data)

    def exchange(self, code: str, **extra: str) -> httpx.Response:
        return self.token(grant_type="authorization_code", code=code, redirect_uri=self.redirect_uri,
                          code_verifier=self.verifier, **extra)

    def tokens(self, **overrides: Any) -> dict[str, Any]:
        code, _ = self.code(**overrides)
        r = self.exchange(code)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


def post_form(http: httpx.Client, url: str, pairs: list[tuple[str, str]]) -> httpx.Response:
    """A form POST with repeated fields (httpx's ``data=`` takes a mapping only)."""
    return http.post(url, content=urlencode(pairs), headers={"content-type": "application/x-www-form-urlencoded"})


def location_params(r: httpx.Response) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(r.headers["location"]).query).items()}


