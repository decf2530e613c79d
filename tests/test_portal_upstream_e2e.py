"""Each user's own upstream identity, end to end over real HTTP against a running portal (uvicorn on
a free loopback port) and the real loopback OAuth provider as the upstream (its /openapi.json is
the per-user server's spec; /api/me says whose token a call carried).

Users link their upstream account through the portal's page (a real authorization-code + PKCE
flow at the provider), or paste a token; MCP clients get portal tokens through the portal's own
OAuth flow; ``execute`` runs in the real wasm isolate through the official ``mcp`` client.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")

from idp import OAuthProvider
from portal_extras_harness import ME, ME_OR_ERROR, execute, link, mcp_token, notes_portal, sign_in
from portal_harness import form_fields, forms, post_form

from codemode._sandbox import WasmSandbox


@pytest.mark.slow
async def test_two_portal_users_each_reach_their_own_upstream_account(tmp_path: Path, idp: OAuthProvider) -> None:
    async with notes_portal(tmp_path, idp, sandbox=WasmSandbox()) as (portal, client):
        with sign_in(portal, "alice") as alice, sign_in(portal, "bob") as bob:
            alice_token, bob_token = mcp_token(alice), mcp_token(bob)
            # bob has not linked anything: a catchable error naming the page, and the call never left
            out = await execute(portal, bob_token, ME_OR_ERROR)
            assert f"{portal.base}/account/credentials#server-notes" in out["result"]["error"], out
            linked = link(alice, idp, "alice")
            assert linked.status_code == 303
            assert linked.headers["location"] == "/account/credentials?saved=linked#server-notes"
            assert "linked account" in alice.browser.get("/account/credentials").text
            assert link(bob, idp, "bob").status_code == 303
            a = await execute(portal, alice_token, ME)
            b = await execute(portal, bob_token, ME)
            assert a["result"]["username"] == "alice" and b["result"]["username"] == "bob", (a, b)
            assert a["result"]["client_id"] == client.client_id  # the portal's upstream client
            assert alice_token not in a["text"] and bob_token not in b["text"]
        portal.portal.audit.flush()
        rows = portal.portal.store.list_audit()
        users = {u.name: u.id for u in portal.portal.store.list_users()}
        calls = [(r.user_id, r.status) for r in rows if r.event == "upstream_call"]
        assert calls == [(users["bob"], "upstream.no_user_credential"), (users["alice"], "200"), (users["bob"], "200")]
        linked_rows = [r.user_id for r in rows if r.event == "upstream_linked"]
        assert linked_rows == [users["alice"], users["bob"]]


async def test_expiry_refresh_revocation_and_unlinking(tmp_path: Path, idp: OAuthProvider) -> None:
    async with notes_portal(tmp_path, idp, ttl=2) as (portal, client):
        with sign_in(portal, "alice") as alice:
            token = mcp_token(alice)
            assert link(alice, idp, "alice").status_code == 303
            keeper = portal.portal.extras.resolver
            assert keeper is not None
            time.sleep(2.3)  # the upstream access token expired
            out = await execute(portal, token, ME)
            assert out["result"]["username"] == "alice" and keeper.refreshes == 1, out
            # alice revokes the portal's access at the provider: her next call gets a catchable error
            uid = portal.portal.store.find_user("alice").id  # type: ignore[union-attr]
            cred = portal.portal.store.get_upstream_credential(uid, "notes")
            assert cred is not None
            assert client.client_secret is not None
            form = {"token": keeper.reveal(cred, "refresh"), "token_type_hint": "refresh_token"}
            revoked = httpx.post(idp.revocation_endpoint, auth=(client.client_id, client.client_secret), data=form)
            assert revoked.status_code == 200
            time.sleep(2.3)
            out = await execute(portal, token, ME_OR_ERROR)
            assert "no longer works" in out["result"]["error"], out
            assert "stopped working" in alice.browser.get("/account/credentials").text
            # link again, then unlink through the page: revoked at the provider
            assert link(alice, idp, "alice").status_code == 303
            assert (await execute(portal, token, ME))["result"]["username"] == "alice"
            cred = portal.portal.store.get_upstream_credential(uid, "notes")
            assert cred is not None
            access = keeper.reveal(cred)
            page = alice.browser.get("/account/credentials")
            form = next(f for f in forms(page.text) if f["action"] == "/account/credentials/notes/delete")
            gone = post_form(alice.browser, form["action"], form_fields(form))
            assert gone.status_code == 303 and gone.headers["location"].endswith("removed=revoked#server-notes")
            me = httpx.get(f"{idp.base_url}/api/me", headers={"Authorization": f"Bearer {access}"})
            assert me.status_code == 401
            out = await execute(portal, token, ME_OR_ERROR)
            assert "have not added yours" in out["result"]["error"]


async def test_a_pasted_token_serves_its_owner_only_and_is_never_stored_in_clear(
    tmp_path: Path, idp: OAuthProvider
) -> None:
    direct = idp.register_client(["http://127.0.0.1:9/elsewhere"], scope="notes:read")
    pasted = idp.authorize(direct, "alice", scope="notes:read")["access_token"]
    async with notes_portal(tmp_path, idp) as (portal, _):
        with sign_in(portal, "alice") as alice, sign_in(portal, "bob") as bob:
            page = alice.browser.get("/account/credentials")
            form = next(f for f in forms(page.text) if f["action"] == "/account/credentials/notes/key")
            fields = [(k, pasted if k == "value" else v) for k, v in form_fields(form)]
            saved = post_form(alice.browser, form["action"], fields)
            assert saved.status_code == 303 and "saved=key" in saved.headers["location"], saved.text
            shown = alice.browser.get("/account/credentials").text
            assert "your key" in shown and pasted not in shown
            # a form from another session (bob's CSRF token on alice's cookie) is refused
            forged = post_form(alice.browser, form["action"], [
                ("csrf", dict(form_fields(forms(bob.browser.get("/account/credentials").text)[-1]))["csrf"]),
                ("scheme", "oauth2"), ("value", "attacker-token-123456")])  # fmt: skip
            assert forged.status_code == 403
            a = await execute(portal, mcp_token(alice), "result = api.call('getMe')\nprint(result)")
            assert a["result"]["username"] == "alice" and a["result"]["client_id"] == direct.client_id
            assert pasted not in a["text"]
            b = await execute(portal, mcp_token(bob), ME_OR_ERROR)
            assert "have not added yours" in b["result"]["error"]
            link(bob, idp, "bob")
            uid = portal.portal.store.find_user("bob").id  # type: ignore[union-attr]
            bob_cred = portal.portal.store.get_upstream_credential(uid, "notes")
            keeper = portal.portal.extras.resolver
            assert bob_cred is not None and keeper is not None
            bob_secrets = [keeper.reveal(bob_cred), keeper.reveal(bob_cred, "refresh")]
        portal.portal.audit.flush()
        audit = json.dumps([r.__dict__ for r in portal.portal.store.list_audit()])
    blob = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("portal.db*"))
    assert b"upstream_credentials" in blob  # the database really is this file
    for secret in (pasted, *bob_secrets):
        assert secret.encode() not in blob and secret not in audit
