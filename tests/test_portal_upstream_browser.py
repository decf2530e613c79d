"""The API-credentials page in headless Chromium (Debian's, through Playwright): sign in, link an
upstream account through the real provider's sign-in and consent pages and back (the page's CSP
lets the "Link" form's redirect reach the provider: Chrome applies form-action to it), paste a
key, unlink. Keyboard-reachable controls with labels; no JavaScript needed."""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")

from idp import OAuthProvider
from portal_harness import running_portal

SECRET_VAR = "NOTES_CLIENT_SECRET"


def test_link_paste_and_unlink_in_a_browser(tmp_path: Path, idp: OAuthProvider, page: Any) -> None:
    client_id, secret = f"portal-{secrets.token_hex(4)}", secrets.token_urlsafe(24)
    servers = f"""
[servers.notes]
spec = "{idp.openapi_url}"
upstream_auth = "per-user"
description = "The provider's notes API"

[servers.notes.upstream_oauth]
client_id = "{client_id}"
client_secret = "{SECRET_VAR}"
"""
    with running_portal(tmp_path, servers, env={SECRET_VAR: secret}) as portal:
        idp.register_client([f"{portal.base}/upstream/notes/callback"], client_id=client_id, client_secret=secret,
                            scope="notes:read notes:write")  # fmt: skip
        portal.portal.users.add("alice", "alice-portal-password")
        blocked: list[str] = []
        page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)

        page.goto(f"{portal.base}/login?next=/account/credentials")
        page.get_by_label("User name").fill("alice")
        page.get_by_label("Password").fill("alice-portal-password")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(re.compile(r".*/account/credentials$"))
        assert page.get_by_role("heading", name="Your API credentials").is_visible()
        assert page.get_by_role("link", name="API credentials").is_visible()  # in the navigation
        assert "none yet" in page.locator("#server-notes").inner_text()

        page.get_by_role("button", name=re.compile("Link your account at 127.0.0.1")).click()
        page.wait_for_url(re.compile(re.escape(idp.base_url) + "/authorize.*"))
        page.get_by_label("Username").fill("alice")
        page.get_by_label("Password").fill(idp.users["alice"])
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("button", name="Approve").click()
        page.wait_for_url(re.compile(r".*/account/credentials\?saved=linked#server-notes$"))
        assert page.get_by_role("status").inner_text().startswith("Linked.")
        assert "linked account" in page.locator("#server-notes").inner_text()
        page.screenshot(path=str(tmp_path / "credentials.png"), full_page=True)  # docs/portal-credentials.png

        field = page.get_by_label(re.compile("OAuth access token"))
        field.fill("a-pasted-token-0123456789")
        assert field.get_attribute("type") == "password"  # never shown on screen
        page.get_by_role("button", name="Save a key instead").click()
        page.wait_for_url(re.compile(r".*saved=key#server-notes$"))
        assert "your key" in page.locator("#server-notes").inner_text()
        assert "a-pasted-token-0123456789" not in page.content()

        page.get_by_role("button", name="Remove your credential for notes").click()
        page.wait_for_url(re.compile(r".*removed=removed#server-notes$"))
        assert "none yet" in page.locator("#server-notes").inner_text()
        assert blocked == []
