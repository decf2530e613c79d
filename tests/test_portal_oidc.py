"""Sign-in delegated to an OpenID Connect provider: end to end against a running portal and the real
loopback provider (discovery, code + PKCE, nonce, ID token checked against its JWKS), the mapping to
portal users by (issuer, sub), pre-provisioning through the CLI, hostile callbacks; and every ID-token
check on its own, with tokens signed by a key the test controls."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")

from codemode_portal import MemoryStore
from codemode_portal._audit import AuditLog
from codemode_portal._box import SecretBox, generate_key, parse_key
from codemode_portal._oidc import OidcLogin, OidcRefused, _Metadata
from codemode_portal._provider_config import OidcSettings
from codemode_portal._store import AsyncStore
from idp import OAuthProvider
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey, RSAKey
from portal_extras_harness import oidc_portal, sign_in_at_provider, signed_in_as, to_provider
from portal_harness import Flow

CODEMODE = str(Path(sys.executable).with_name("codemode"))


def test_first_sign_in_creates_a_user_mapped_by_subject_never_by_name(tmp_path: Path, idp: OAuthProvider) -> None:
    with oidc_portal(tmp_path, idp, create_users=True) as portal:
        portal.portal.users.add("alice", "local-alice-password")  # a local user with the same name
        with Flow(portal) as flow:
            done = sign_in_at_provider(flow, idp, "alice")
            assert done.status_code == 303 and done.headers["location"] == "/account"
            assert signed_in_as(flow) == "alice-2"  # a new user: never the local alice
        store = portal.portal.store
        made = store.find_user("alice-2")
        assert made is not None and store.find_user("alice") is not None
        ident = store.find_external_identity(idp.issuer, "user-alice")
        assert ident is not None and ident.user_id == made.id
        with Flow(portal) as again:  # the next sign-in maps to the same user
            assert sign_in_at_provider(again, idp, "alice").status_code == 303
            assert signed_in_as(again) == "alice-2"
        assert len(store.list_users()) == 3  # admin, alice, alice-2
        # an OIDC-made user has no password to sign in with
        with Flow(portal) as pw:
            assert pw.login("alice-2", "anything-at-all").status_code == 401
        portal.portal.audit.flush()
        rows = store.list_audit()
        assert [r.event for r in rows if r.event in ("user_created", "login")] == ["user_created", "login", "login"]
        assert all(r.detail == f"oidc 127.0.0.1:{urlsplit(idp.issuer).port}" for r in rows if r.event == "login")


def test_only_pre_provisioned_users_when_creation_is_off(tmp_path: Path, idp: OAuthProvider) -> None:
    with oidc_portal(tmp_path, idp, create_users=False) as portal:
        with Flow(portal) as flow:
            refused = sign_in_at_provider(flow, idp, "bob")
            assert refused.status_code == 400 and "No portal account is linked" in refused.text
            assert signed_in_as(flow) is None
        assert portal.portal.store.find_user("bob") is None
        out = subprocess.run([CODEMODE, "portal", "oidc", "link", "robert", "user-bob"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert "signs in as robert (created, without a password)" in out.stdout
        again = subprocess.run([CODEMODE, "portal", "oidc", "link", "admin", "user-bob"], cwd=tmp_path,
                               capture_output=True, text=True, timeout=120)  # fmt: skip
        assert again.returncode == 1 and "already linked" in again.stderr
        with Flow(portal) as flow:
            assert sign_in_at_provider(flow, idp, "bob", next_url="/account?x=1").headers["location"] == "/account?x=1"
            assert signed_in_as(flow) == "robert"
        listed = subprocess.run([CODEMODE, "portal", "oidc", "list"], cwd=tmp_path, capture_output=True, text=True,
                                timeout=120)  # fmt: skip
        assert f"robert\t{idp.issuer}\tuser-bob\t" in listed.stdout
        portal.portal.audit.flush()
        failed = [r for r in portal.portal.store.list_audit() if r.event == "login_failed"]
        assert [r.status for r in failed] == ["oidc_unknown_user"]


def test_hostile_callbacks_are_refused(tmp_path: Path, idp: OAuthProvider) -> None:
    with oidc_portal(tmp_path, idp, create_users=True) as portal:
        with Flow(portal) as victim, Flow(portal) as attacker:
            # the attacker completes the provider's step and lures the victim to the callback: refused
            url = to_provider(attacker)
            back = idp.login_and_consent(url, "bob")
            lured = victim.browser.get(back)
            assert lured.status_code == 400 and "another browser session" in lured.text
            assert signed_in_as(victim) is None
            # ...and the attacker's own use of it afterwards finds the state spent
            replay = attacker.browser.get(back)
            assert replay.status_code == 400 and "expired or was already used" in replay.text
            # a complete sign-in, then its callback replayed
            url = to_provider(victim)
            back = idp.login_and_consent(url, "alice")
            assert victim.browser.get(back).status_code == 303
            with Flow(portal) as other:
                other.browser.cookies.update(victim.browser.cookies)
                assert other.browser.get(back).status_code == 400
            # forged, missing, oversized states; a provider error
            base = f"{portal.base}/login/oidc/callback"
            for q in ({"code": "x", "state": "forged"}, {"code": "x"}, {"state": "s" * 300},
                      {"error": "access_denied", "state": "x"}):  # fmt: skip
                r = attacker.browser.get(f"{base}?{urlencode(q)}")
                assert r.status_code == 400, q
            url = to_provider(attacker)
            denied = idp.login_and_consent(url, "bob", approve=False)
            r = attacker.browser.get(denied)
            assert r.status_code == 400 and "did not sign you in (access_denied)" in r.text
            # an open redirect through next= is not possible
            for evil in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"):
                with Flow(portal) as f:
                    r = sign_in_at_provider(f, idp, "alice", next_url=evil)
                    assert r.status_code == 303 and r.headers["location"] == "/account", evil


# -- every ID-token check, with a key the test controls -----------------------------------------------

ISSUER = "https://idp.example"
CLIENT = "portal-client"


@pytest.fixture
def login() -> OidcLogin:
    settings = OidcSettings(issuer=ISSUER, client_id=CLIENT)
    store = MemoryStore()
    box = SecretBox([parse_key(generate_key(), "t")])
    return OidcLogin(settings, AsyncStore(store), box, AuditLog(store), portal_issuer="http://127.0.0.1:1",
                     client_secret=None)  # fmt: skip


KEY = RSAKey.generate_key(2048, parameters={"kid": "k1", "alg": "RS256"})
OTHER = RSAKey.generate_key(2048, parameters={"kid": "k1", "alg": "RS256"})


def meta() -> _Metadata:
    doc = {"issuer": ISSUER, "jwks_uri": "https://idp.example/jwks", "id_token_signing_alg_values_supported": ["RS256"]}
    return _Metadata(doc, time.time(), KeySet([KEY]), time.time())


def token(key: Any = KEY, alg: str = "RS256", **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": CLIENT, "sub": "user-1", "exp": now + 300, "iat": now, "nonce": "n-1"}
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode({"alg": alg, "kid": "k1"}, claims, key, algorithms=[alg])


async def test_a_valid_id_token_passes(login: OidcLogin) -> None:
    claims = await login._claims(meta(), token(), nonce="n-1", access_token="at")
    assert claims["sub"] == "user-1"
    assert (await login._claims(meta(), token(aud=[CLIENT]), nonce="n-1", access_token="at"))["sub"] == "user-1"


@pytest.mark.parametrize(
    "bad",
    [
        {"key": OTHER},  # signed by someone else
        {"iss": "https://evil.example"},
        {"aud": "someone-else"},
        {"aud": ["someone-else", CLIENT]},  # several audiences without azp
        {"aud": [CLIENT], "azp": "someone-else"},
        {"exp": int(time.time()) - 3600},
        {"iat": None},
        {"sub": None},
        {"nonce": "n-other"},
        {"nonce": None},
        {"at_hash": "AAAAAAAAAAAAAAAAAAAAAA"},
    ],
)
async def test_a_bad_id_token_is_refused(login: OidcLogin, bad: dict[str, Any]) -> None:
    with pytest.raises(OidcRefused, match=r"ID token was not valid|no usable subject"):
        await login._claims(meta(), token(**bad), nonce="n-1", access_token="at")


async def test_symmetric_and_unsigned_tokens_are_refused(login: OidcLogin) -> None:
    hs = token(key=OctKey.import_key(CLIENT.encode() * 4), alg="HS256")
    with pytest.raises(OidcRefused):
        await login._claims(meta(), hs, nonce="n-1", access_token="at")
    head, body, _ = token().split(".")
    none_head = base64.urlsafe_b64encode(json.dumps({"alg": "none"}).encode()).rstrip(b"=").decode()
    with pytest.raises(OidcRefused):
        await login._claims(meta(), f"{none_head}.{body}.", nonce="n-1", access_token="at")
    with pytest.raises(OidcRefused):
        await login._claims(meta(), f"{head}.{body}.", nonce="n-1", access_token="at")
