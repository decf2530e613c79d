"""Black-box authorization suite, part 3: the browser side and malformed requests, over real HTTP.

Consent and sign-in CSRF (missing, forged, another session's token, no session), consent widening
through a forged form, login brute force per user (from rotating addresses) and per address (over
rotating names) with the limits kept in the store (SQLite and PostgreSQL), no user enumeration,
session fixation, sign-out ending the session server-side, open redirects through ``next``, cookie
flags; then malformed requests to every endpoint (wrong content types, duplicated parameters, huge
values, non-UTF-8, JSON where a form is expected, broken Basic credentials): every OAuth error is
RFC 6749 §5.2 JSON, every page error an HTML page, never a redirect, a stack trace or a 500.
"""

from __future__ import annotations

import base64
import itertools
import random
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")

from authz_kit import assert_error_page, assert_oauth_error, new_flow, redirect_query
from portal_harness import PETSTORE, REDIRECT, Flow, RunningPortal, form_fields, forms, post_form, running_portal

SERVERS = f"""
[servers.petstore]
spec = "{PETSTORE}"
base_url = "http://127.0.0.1:9/api/v3"

[servers.other]
spec = "{PETSTORE}"
base_url = "http://127.0.0.1:9/api/v3"
"""
# Addresses come from X-Forwarded-For here (as behind a proxy), so each test can be its own client.
SETTINGS = """registrations_per_ip_hour = 100000
trust_forwarded_for = true
login_failures_per_user = 3
login_failures_per_ip = 5
"""
PASSWORD = "correct-horse-battery"


def _users(portal: RunningPortal) -> None:
    for name in ("alice", "bob", "carol", "dave"):
        portal.portal.users.add(name, PASSWORD)


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPortal]:
    with running_portal(tmp_path_factory.mktemp("web"), SERVERS, portal=SETTINGS) as running:
        _users(running)
        yield running


@pytest.fixture(scope="module")
def pg_module_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database in the session's PostgreSQL cluster for this module."""
    with request.getfixturevalue("postgres").database("web") as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stored(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPortal]:
    if request.param == "sqlite":
        yield request.getfixturevalue("portal")
        return
    url = request.getfixturevalue("pg_module_url")
    with running_portal(tmp_path_factory.mktemp("web-pg"), SERVERS, portal=SETTINGS, database_url=url) as running:
        _users(running)
        yield running


_ADDRESSES = itertools.count(1)


def address() -> str:
    """A client address never used before in this run (each test its own, so limits do not leak)."""
    n = next(_ADDRESSES)
    return f"198.18.{n // 250}.{n % 250 + 1}"


def browser(portal: RunningPortal, ip: str | None = None) -> httpx.Client:
    return portal.http(follow_redirects=False, headers={"X-Forwarded-For": ip or address()})


def login(http: httpx.Client, name: str, password: str, *, next_: str = "/account") -> httpx.Response:
    page = http.get("/login")
    csrf = dict(form_fields(forms(page.text)[-1]))["csrf"]
    return http.post("/login", data={"username": name, "password": password, "csrf": csrf, "next": next_})


# == consent CSRF ===============================================================================
@pytest.mark.parametrize("tamper", ["missing", "forged", "empty", "other-session", "no-cookie", "signed-out"])
def test_consent_needs_this_sessions_csrf_token(portal: RunningPortal, tamper: str) -> None:
    with new_flow(portal) as flow:
        flow.browser.headers["X-Forwarded-For"] = address()
        page = flow.consent_page()
        form = next(f for f in forms(page.text) if f["action"] == "/authorize")
        fields = [*form_fields(form), ("decision", "approve")]
        before = len(portal.portal.store.list_grants(active_only=False))
        client = flow.browser
        if tamper == "missing":
            fields = [(k, v) for k, v in fields if k != "csrf"]
        elif tamper == "forged":
            fields = [(k, "A" * 43 if k == "csrf" else v) for k, v in fields]
        elif tamper == "empty":
            fields = [(k, "" if k == "csrf" else v) for k, v in fields]
        elif tamper == "other-session":  # the attacker's own valid token, in the victim's browser
            with new_flow(portal) as attacker:
                attacker.login()
                theirs = next(f for f in forms(attacker.consent_page().text) if f["action"] == "/authorize")
                token = dict(form_fields(theirs))["csrf"]
            fields = [(k, token if k == "csrf" else v) for k, v in fields]
        elif tamper == "no-cookie":  # a cross-site POST: SameSite=Lax keeps the cookie home
            client = browser(portal)
        elif tamper == "signed-out":
            logout_csrf = dict(form_fields(next(f for f in forms(page.text) if f["action"] == "/logout")))["csrf"]
            assert flow.browser.post("/logout", data={"csrf": logout_csrf}).status_code == 303
        r = post_form(client, "/authorize", fields)
        if client is not flow.browser:
            client.close()
        assert_error_page(r, 403)
        assert len(portal.portal.store.list_grants(active_only=False)) == before


def test_a_forged_consent_form_cannot_widen_or_move_the_grant(portal: RunningPortal) -> None:
    with new_flow(portal) as flow:
        page = flow.consent_page(scope="petstore:read")
        form = next(f for f in forms(page.text) if f["action"] == "/authorize")
        fields = [*form_fields(form), ("grant_scope", "petstore:write"), ("grant_scope", "other:read"),
                  ("decision", "approve")]  # fmt: skip
        q = redirect_query(post_form(flow.browser, "/authorize", fields))
        assert flow.exchange(q["code"]).json()["scope"] == "petstore:read"
        moved = [(k, f"{portal.base}/mcp/other" if k == "resource" else v) for k, v in form_fields(form)]
        r = post_form(flow.browser, "/authorize", [*moved, ("grant_scope", "other:read"), ("decision", "approve")])
        q = redirect_query(r)  # re-validated as a new request: a grant for what the form now says, no more
        if "code" in q:
            t = flow.exchange(q["code"]).json()
            assert set(t["scope"].split()) <= {"other:read"}


def test_sign_in_needs_this_sessions_csrf_token(portal: RunningPortal) -> None:
    with browser(portal) as http, browser(portal) as other:
        http.get("/login")
        theirs = dict(form_fields(forms(other.get("/login").text)[-1]))["csrf"]
        for csrf in (None, "", "x" * 43, theirs):
            data = {"username": "alice", "password": PASSWORD, **({"csrf": csrf} if csrf is not None else {})}
            r = http.post("/login", data=data)
            assert_error_page(r, 403)


# == login brute force (limits kept in the store) ===============================================
def test_per_user_limit_holds_across_addresses(stored: RunningPortal) -> None:
    for _ in range(3):
        with browser(stored) as http:
            r = login(http, "alice", "wrong-password!")
            assert r.status_code == 401 and "Wrong user name or password" in r.text
    with browser(stored) as http:
        r = login(http, "alice", PASSWORD)  # the right password, from a fresh address: still locked
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        assert "Too many" in r.text and "Wrong user name" not in r.text
    with browser(stored) as http:
        assert login(http, "bob", PASSWORD).status_code == 303  # another user is not affected


def test_per_address_limit_holds_across_user_names(stored: RunningPortal) -> None:
    ip = address()
    for i in range(5):
        with browser(stored, ip) as http:
            assert login(http, f"nobody{i}", "wrong-password!").status_code == 401
    with browser(stored, ip) as http:
        r = login(http, "carol", PASSWORD)
        assert r.status_code == 429 and "retry-after" in r.headers
    with browser(stored) as http:
        assert login(http, "carol", PASSWORD).status_code == 303  # the same user from elsewhere


def test_unknown_users_and_wrong_passwords_look_the_same(portal: RunningPortal) -> None:
    with browser(portal) as a, browser(portal) as b:
        known = login(a, "dave", "wrong-password!")
        unknown = login(b, "nobody-" + secrets.token_hex(4), "wrong-password!")
    assert known.status_code == unknown.status_code == 401

    def alert(r: httpx.Response) -> str:
        m = re.search(r'role="alert"[^>]*>([^<]*)<', r.text)
        return m.group(1) if m else ""

    assert alert(known) == alert(unknown) != ""


# == sessions ===================================================================================
def test_sign_in_replaces_a_planted_session_value(portal: RunningPortal) -> None:
    planted = "cmp_ss_" + secrets.token_urlsafe(32)[:43]
    with browser(portal) as victim:
        name = portal.portal.web.sessions.cookie
        victim.cookies.set(name, planted, domain="127.0.0.1")  # e.g. set by another port's app
        r = login(victim, "dave", PASSWORD)
        assert r.status_code == 303
        fresh = victim.cookies.get(name, domain="127.0.0.1")
        assert fresh and fresh != planted
    with browser(portal) as attacker:
        attacker.cookies.set(name, planted, domain="127.0.0.1")
        r = attacker.get("/account")
        assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_sign_out_ends_the_session_on_the_server(portal: RunningPortal) -> None:
    with browser(portal) as http:
        assert login(http, "dave", PASSWORD).status_code == 303
        name = portal.portal.web.sessions.cookie
        stolen = http.cookies.get(name)
        page = http.get("/account")
        assert page.status_code == 200
        csrf = dict(form_fields(next(f for f in forms(page.text) if f["action"] == "/logout")))["csrf"]
        assert http.post("/logout", data={"csrf": csrf}).status_code == 303
    with browser(portal) as replay:
        replay.cookies.set(name, stolen or "", domain="127.0.0.1")
        assert replay.get("/account").status_code == 303


def test_session_cookie_flags(portal: RunningPortal, tmp_path: Path) -> None:
    with browser(portal) as http:
        r = http.get("/login")
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower() and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http on loopback
    extra = 'public_url = "https://portal.example.com"\n'
    with running_portal(tmp_path, SERVERS, portal=extra) as https, https.http() as http:
        r = http.get("/login", headers={"Host": "portal.example.com"})
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("__Host-cmp_session=") and "Secure" in cookie and "HttpOnly" in cookie


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/", "//evil.example/", "/\\evil.example/", "\\\\evil.example", "http:evil.example",
     "javascript:alert(1)", "/%2F%2Fevil.example", " //evil.example", "/\t/evil.example"],
)
def test_sign_in_never_redirects_off_the_portal(portal: RunningPortal, target: str) -> None:
    with browser(portal) as http:
        r = login(http, "dave", PASSWORD, next_=target)
    assert r.status_code == 303
    location = r.headers["location"]
    assert location.startswith("/") and not location.startswith(("//", "/\\")), location
    landed = urlsplit(urljoin(portal.base + "/login", location))  # where a browser goes next
    assert landed.netloc == urlsplit(portal.base).netloc, location


def test_a_user_cannot_revoke_another_users_grant(portal: RunningPortal) -> None:
    with new_flow(portal) as flow:
        flow.tokens()  # admin's grant
        grant = portal.portal.store.list_grants()[-1]
    with browser(portal) as http:
        assert login(http, "dave", PASSWORD).status_code == 303
        page = http.get("/account")
        csrf = dict(form_fields(next(f for f in forms(page.text) if f["action"] == "/logout")))["csrf"]
        r = http.post(f"/account/grants/{grant.id}/revoke", data={"csrf": csrf})
        assert_error_page(r, 404)
        r = http.post(f"/account/grants/{grant.id}/revoke", data={})
        assert r.status_code in (403, 404) and "location" not in r.headers
    assert portal.portal.store.get_grant(grant.id).revoked_at is None  # type: ignore[union-attr]


# == malformed requests to every endpoint =======================================================
FORM = {"content-type": "application/x-www-form-urlencoded"}


def _basic(raw: bytes) -> dict[str, str]:
    return {**FORM, "authorization": "Basic " + base64.b64encode(raw).decode()}


# (method, path, request kwargs, status, OAuth error or None for an HTML page). Where two answers are
# both right (a request with no client is unauthenticated before it is malformed), either may come.
Status = int | tuple[int, ...]
Error = str | tuple[str, ...] | None
MALFORMED: list[tuple[str, str, dict[str, Any], Status, Error]] = [
    ("POST", "/token", {"json": {"grant_type": "authorization_code"}}, 400, "invalid_request"),
    ("POST", "/token", {"content": b"grant_type=x", "headers": {"content-type": "text/plain"}}, 400, "invalid_request"),
    ("POST", "/token", {"content": b"grant_type=x", "headers": {
        "content-type": "text/plain; x=application/x-www-form-urlencoded"}}, 400, "invalid_request"),
    ("POST", "/token", {"files": {"grant_type": ("g", b"authorization_code")}}, 400, "invalid_request"),
    ("POST", "/token", {}, 400, "invalid_request"),
    ("POST", "/token", {"content": b"grant_type=refresh_token&grant_type=authorization_code", "headers": FORM},
     400, "invalid_request"),
    ("POST", "/token", {"content": b"grant_type=authorization_code&code=a&code=b", "headers": FORM},
     400, "invalid_request"),
    ("POST", "/token", {"content": b"grant_type=authorization_code&code=" + b"a" * 100_000, "headers": FORM},
     400, "invalid_request"),
    ("POST", "/token", {"content": b"grant_type=authorization_code&code=%ff%fe", "headers": FORM},
     (400, 401), ("invalid_request", "invalid_client")),
    ("POST", "/token", {"content": b"grant_type=authorization_code&code=\xff\xfe", "headers": FORM},
     400, "invalid_request"),
    ("POST", "/token", {"content": b"grant_type=authorization_code&code=a%00b", "headers": FORM},
     (400, 401), ("invalid_request", "invalid_client")),
    ("POST", "/token", {"content": b"grant_type=authorization_code&client_id=%22%5C", "headers": FORM},
     (400, 401), ("invalid_request", "invalid_client")),
    ("POST", "/token", {"content": b"grant_type=password&username=admin&password=x", "headers": FORM},
     400, "unsupported_grant_type"),
    ("POST", "/token", {"content": b"grant_type=client_credentials", "headers": FORM}, 400, "unsupported_grant_type"),
    ("POST", "/token", {"content": b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange",
                        "headers": FORM}, 400, "unsupported_grant_type"),
    ("POST", "/token", {"content": b"grant_type=implicit", "headers": FORM}, 400, "unsupported_grant_type"),
    ("POST", "/token", {"content": b"grant_type=authorization_code&code=x", "headers": {
        **FORM, "authorization": "Basic !!!not-base64"}}, 401, "invalid_client"),
    ("POST", "/token", {"content": b"grant_type=authorization_code&code=x", "headers": _basic(b"\xff\xfe:\xfd")},
     401, "invalid_client"),
    ("POST", "/token", {"content": b"grant_type=authorization_code&code=x", "headers": _basic(b"no-colon")},
     401, "invalid_client"),
    ("POST", "/token", {"content": b"grant_type=authorization_code&code=x", "headers": _basic(b"nobody:secret")},
     401, "invalid_client"),
    ("POST", "/token", {"content": b"grant_type=authorization_code&code=x", "headers": _basic(b"%zz:%zz")},
     401, "invalid_client"),
    ("POST", "/revoke", {"json": {"token": "x"}}, 400, "invalid_request"),
    ("POST", "/revoke", {"content": b"token=a&token=b", "headers": FORM}, 400, "invalid_request"),
    ("POST", "/revoke", {"content": b"token=" + b"a" * 100_000, "headers": FORM}, 400, "invalid_request"),
    ("POST", "/revoke", {"content": b"token=a\xff", "headers": FORM}, 400, "invalid_request"),
    ("POST", "/revoke", {"content": b"token=x", "headers": _basic(b"nobody:secret")}, 401, "invalid_client"),
    ("POST", "/register", {"data": {"redirect_uris": REDIRECT}}, 400, "invalid_client_metadata"),
    ("POST", "/register", {"content": b"{nope", "headers": {"content-type": "application/json"}},
     400, "invalid_client_metadata"),
    ("POST", "/register", {"content": b'{"redirect_uris": ["\xff"]}', "headers": {"content-type": "application/json"}},
     400, "invalid_client_metadata"),
    ("POST", "/register", {"content": b"[" * 30_000 + b"]" * 30_000, "headers": {"content-type": "application/json"}},
     400, "invalid_client_metadata"),
    ("POST", "/register", {"content": b"{" + b'"a":1,' * 20_000 + b"}",
                           "headers": {"content-type": "application/json"}}, 413, "invalid_client_metadata"),
    ("POST", "/register", {"json": {"redirect_uris": [REDIRECT], "grant_types": "authorization_code"}},
     400, "invalid_client_metadata"),
    ("POST", "/register", {"json": {"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "bogus"}},
     400, "invalid_client_metadata"),
    ("POST", "/register", {"json": {"redirect_uris": [REDIRECT], "response_types": ["token"]}},
     400, "invalid_client_metadata"),
    ("POST", "/register", {"json": {"redirect_uris": [REDIRECT], "client_name": "x" * 5000}},
     400, "invalid_client_metadata"),
    ("POST", "/register", {"json": {"redirect_uris": [REDIRECT], "client_uri": "javascript:alert(1)"}},
     400, "invalid_client_metadata"),
    ("POST", "/register", {"json": {"redirect_uris": [REDIRECT] * 2 + [f"{REDIRECT}{i}" for i in range(20)]}},
     400, "invalid_redirect_uri"),
    ("GET", "/authorize", {"params": {"client_id": "x" * 20_000}}, 414, None),
    ("GET", "/authorize?client_id=%ff%fe&response_type=code", {}, 400, None),
    ("GET", "/authorize?client_id=a&client_id=b&response_type=code", {}, 400, None),
    ("GET", "/authorize?client_id=a%00b&response_type=code", {}, 400, None),
    ("POST", "/authorize", {"json": {"decision": "approve"}}, 400, None),
    ("POST", "/authorize", {"content": b"decision=approve&csrf=" + b"a" * 100_000, "headers": FORM}, 400, None),
    ("POST", "/authorize", {"content": b"decision=approve\xff", "headers": FORM}, 400, None),
    ("POST", "/login", {"json": {"username": "admin", "password": "x"}}, 400, None),
    ("POST", "/login", {"content": b"username=admin&password=" + b"a" * 100_000, "headers": FORM}, 400, None),
    ("POST", "/login", {"content": b"username=\xff&password=x", "headers": FORM}, 400, None),
    ("POST", "/logout", {"content": b"", "headers": FORM}, 403, None),
    ("POST", "/account/grants/x/revoke", {"content": b"csrf=x", "headers": FORM}, 303, None),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "error"), MALFORMED,
                         ids=[f"{m} {p[:30]} #{i}" for i, (m, p, *_r) in enumerate(MALFORMED)])  # fmt: skip
def test_malformed_requests_get_clean_errors(portal: RunningPortal, method: str, path: str, kwargs: dict[str, Any],
                                             status: Status, error: Error) -> None:  # fmt: skip
    with browser(portal) as http:
        r = http.request(method, path, **kwargs)
    statuses = status if isinstance(status, tuple) else (status,)
    assert r.status_code in statuses, (r.status_code, r.text[:400])
    status = r.status_code
    if error is not None:
        errors = error if isinstance(error, tuple) else (error,)
        assert r.headers.get("content-type", "").startswith("application/json"), r.text[:300]
        assert r.json().get("error") in errors, r.text[:300]
        body = assert_oauth_error(r, status, r.json()["error"])
        if status == 401 and "authorization" in {k.lower() for k in kwargs.get("headers", {})}:
            # RFC 6749 §5.2: a failed Basic authentication is a 401 with a matching challenge
            assert r.headers.get("www-authenticate", "").lower().startswith("basic"), (r.headers, body)
    elif status == 303:
        assert r.headers["location"].startswith("/login")
    else:
        assert_error_page(r, status)


def test_methods_that_do_not_exist_are_refused_plainly(portal: RunningPortal) -> None:
    with browser(portal) as http:
        for method, path in [("GET", "/token"), ("GET", "/revoke"), ("GET", "/register"), ("PUT", "/authorize"),
                             ("DELETE", "/login"), ("POST", "/.well-known/oauth-authorization-server")]:
            r = http.request(method, path)
            assert r.status_code == 405, (method, path, r.status_code)
            assert "Traceback" not in r.text


def test_no_endpoint_answers_500_to_a_burst_of_garbage(portal: RunningPortal) -> None:
    """Random bytes in every position of every endpoint (a small seeded fuzz, same inputs every run)."""
    rnd = random.Random(20261130)
    paths = ["/token", "/revoke", "/register", "/authorize", "/login", "/logout", "/mcp/petstore", "/sse/petstore"]
    ctypes = ["application/x-www-form-urlencoded", "application/json", "text/plain", "multipart/form-data", ""]
    with browser(portal) as http:
        for _ in range(60):
            body = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 300)))
            headers = {"content-type": rnd.choice(ctypes)}
            if rnd.random() < 0.3:
                # An empty body gives a bare "Basic" (a header value may not end in a space).
                headers["authorization"] = ("Basic " + base64.b64encode(body[:40]).decode()).rstrip()
            r = http.post(rnd.choice(paths), content=body, headers=headers)
            assert r.status_code < 500, (r.status_code, r.text[:300])
            assert "Traceback" not in r.text
        odd = ["Basic", "Basic !!!", "Basic " + base64.b64encode(b"\xff:\xfe").decode(), "Bearer", "Bearer a b"]
        for path, value in itertools.product(paths, odd):
            r = http.post(path, content=b"x=1", headers={"authorization": value, "content-type": ctypes[0]})
            assert r.status_code < 500, (path, value, r.status_code, r.text[:300])


def test_every_oauth_json_error_has_no_store_and_a_clean_body(portal: RunningPortal) -> None:
    with Flow(portal) as flow:
        flow.register()
        code, _ = flow.code()
        cases = [
            flow.exchange(code + "x"),
            flow.token(grant_type="refresh_token", refresh_token="cmp_rt_nope"),
            flow.token(grant_type="authorization_code"),
            flow.browser.post("/revoke", data={"client_id": flow.client_id}),
        ]
    for r in cases:
        assert r.status_code in (400, 401)
        assert_oauth_error(r, r.status_code, r.json()["error"])


def test_names_with_a_trailing_newline_are_refused(portal: RunningPortal, tmp_path: Path) -> None:
    """``^…$`` with ``re.match`` lets a final newline through; names and URIs must match whole."""
    from codemode_portal import PortalError, load_portal_config

    with pytest.raises(PortalError):
        portal.portal.users.add("mallory\n", PASSWORD)
    (tmp_path / "portal.toml").write_text(f'[servers."bad\\n"]\nspec = "{PETSTORE}"\n')
    assert "bad\n" not in load_portal_config(tmp_path / "portal.toml").servers
    with browser(portal) as http:
        r = http.post("/register", json={"redirect_uris": [REDIRECT + "\n"], "token_endpoint_auth_method": "none"})
    assert_oauth_error(r, 400, "invalid_redirect_uri")
