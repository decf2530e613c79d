"""The portal's pages over real HTTP: sign-in (CSRF, rate limits, no open redirect), sign-out,
the account page that lists and revokes grants, the index, and their security headers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")

from portal_harness import PETSTORE, Flow, RunningPortal, form_fields, forms, post_form, running_portal

SERVERS = f"""
[servers.petstore]
spec = "{PETSTORE}"
base_url = "http://127.0.0.1:9/api/v3"
description = "Pets <b>&</b> more"

[servers.broken]
config = "/nonexistent/servers.toml"
"""


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPortal]:
    extra = "login_failures_per_user = 3\nlogin_failures_per_ip = 6\nregistrations_per_ip_hour = 10000"
    with running_portal(tmp_path_factory.mktemp("portal"), SERVERS, portal=extra) as running:
        running.portal.users.add("alice", "alice-password")
        running.portal.users.add("bob", "bob-password")
        yield running


def test_index_lists_servers_escaped_with_headers(portal: RunningPortal) -> None:
    with portal.http() as http:
        page = http.get("/")
    assert page.status_code == 200
    assert f"{portal.base}/mcp/petstore" in page.text and f"{portal.base}/sse/petstore" in page.text
    assert "Pets &lt;b&gt;&amp;&lt;/b&gt; more" in page.text  # autoescaped
    assert "unavailable" in page.text and "does not exist" in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert 'lang="en"' in page.text and '<main id="main"' in page.text
    css = http_get(portal, "/static/portal.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


def http_get(portal: RunningPortal, path: str) -> object:
    with portal.http() as http:
        return http.get(path)


def test_sign_in_cookie_csrf_and_open_redirects(portal: RunningPortal) -> None:
    with Flow(portal) as f:
        page = f.browser.get("/login?next=//evil.example/steal")
        cookie = page.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax") and "Path=/" in cookie
        fields = dict(form_fields(forms(page.text)[-1]))
        assert fields["next"] == "/account"  # a foreign target was replaced
        labels = page.text.count("<label for=")
        assert labels == 2
        no_csrf = f.browser.post("/login", data={"username": "alice", "password": "alice-password"})
        assert no_csrf.status_code == 403
        ok = f.browser.post("/login", data={**fields, "username": "alice", "password": "alice-password",
                                            "next": "/\\evil.example"})
        assert ok.status_code == 303 and ok.headers["location"] == "/account"
        assert ok.headers["set-cookie"].split(";")[0] != cookie.split(";")[0]  # a new session value
        account = f.browser.get("/account")
        assert account.status_code == 200 and "Sign out alice" in account.text
        csrf = dict(form_fields(forms(account.text)[0]))["csrf"]
        assert f.browser.post("/logout", data={"csrf": "nope"}).status_code == 403
        out = f.browser.post("/logout", data={"csrf": csrf})
        assert out.status_code == 303
        assert f.browser.get("/account").status_code == 303


def test_wrong_passwords_then_rate_limit(portal: RunningPortal) -> None:
    with Flow(portal) as f:
        page = f.browser.get("/login")
        fields = dict(form_fields(forms(page.text)[-1]))
        for _ in range(3):
            r = f.browser.post("/login", data={**fields, "username": "bob", "password": "wrong-password"})
            assert r.status_code == 401 and "Wrong user name or password." in r.text
            assert 'value="bob"' in r.text and "wrong-password" not in r.text
        limited = f.browser.post("/login", data={**fields, "username": "bob", "password": "bob-password"})
        assert limited.status_code == 429 and "Too many failed sign-ins" in limited.text
        assert int(limited.headers["retry-after"]) > 0
    portal.portal.audit.flush()
    failures = [r for r in portal.portal.store.list_audit() if r.event == "login_failed"]
    assert len(failures) >= 4 and all("wrong-password" not in (r.detail or "") for r in failures)


def test_account_lists_and_revokes_only_own_grants(portal: RunningPortal) -> None:
    with Flow(portal) as alice, Flow(portal) as mallory:
        alice.register()
        alice.login("alice", "alice-password")
        tokens = alice.tokens()
        page = alice.browser.get("/account")
        assert "Test Client" in page.text and "petstore:write" in page.text
        form = next(fm for fm in forms(page.text) if fm["action"].startswith("/account/grants/"))
        mallory.login("admin")
        stolen = post_form(mallory.browser, form["action"], form_fields(form))  # another user's grant
        assert stolen.status_code in (403, 404)
        r = post_form(alice.browser, form["action"], form_fields(form))
        assert r.status_code == 303 and r.headers["location"] == "/account?revoked=1"
        assert "Access revoked." in alice.browser.get("/account?revoked=1").text
        with portal.http() as http:
            refused = http.post("/mcp/petstore", json={}, headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert refused.status_code == 401
