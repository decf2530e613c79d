"""Every OAuth error_description is a plain sentence (codemode_portal/_oauth/_descriptions.py).

Two angles: authlib's sources are read for every description its grants and endpoints can raise
(so an authlib upgrade that adds one fails here until it is given a plain text), and a running
portal is driven over HTTP into each error a client can meet at /token, /revoke, /register and
/authorize, checking what the client actually receives.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")

import authlib
from authlib.oauth2.base import OAuth2Error
from authz_kit import assert_oauth_error, assert_plain_description, new_flow, redirect_query
from codemode_portal._oauth._descriptions import DEFAULT_TEXT, describe
from portal_harness import PETSTORE, REDIRECT, Flow, RunningPortal, running_portal

AUTHLIB = Path(authlib.__file__).parent
# The authlib modules whose errors reach a client of the portal's endpoints.
REACHABLE = {
    "oauth2/rfc6749/grants/base.py": None,
    "oauth2/rfc6749/grants/authorization_code.py": None,
    "oauth2/rfc6749/grants/refresh_token.py": "token",
    "oauth2/rfc6749/authenticate_client.py": None,
    "oauth2/rfc6749/authorization_server.py": None,
    "oauth2/rfc7009/revocation.py": "revoke",
    "oauth2/rfc7591/endpoint.py": "register",
    "oauth2/rfc7636/challenge.py": None,
}
# What authlib puts into its f-string descriptions, as a client would see it.
SAMPLES = {
    "methods": "['client_secret_basic', 'client_secret_post', 'none']",
    "param": "scope",
    "self.GRANT_TYPE": "refresh_token",
    "response_type": "token",
    "request.payload.redirect_uri": "http://127.0.0.1:9/evil",
    "request.payload.response_type": "token",
}
ERROR_MODULES = ("authlib.oauth2.rfc6749.errors", "authlib.oauth2.rfc7591.errors", "authlib.oauth2.base")


def _error_class(name: str) -> type[OAuth2Error] | None:
    for module in ERROR_MODULES:
        cls = getattr(importlib.import_module(module), name, None)
        if isinstance(cls, type) and issubclass(cls, OAuth2Error):
            return cls
    return None


def _text(node: ast.expr | None) -> str | None:
    """A literal description, with an f-string's values replaced by a sample."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else SAMPLES.get(ast.unparse(v.value), "x")  # type: ignore[attr-defined]
                       for v in node.values)  # fmt: skip
    return None


def authlib_raises() -> Iterator[tuple[str, str, str, Any]]:
    """(where, error code, authlib's description, endpoint) of every OAuth error raised in REACHABLE."""
    for rel, endpoint in REACHABLE.items():
        tree = ast.parse((AUTHLIB / rel).read_text())
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            func = node.exc.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            cls = _error_class(name)
            if cls is None:
                continue
            kw = {k.arg: k.value for k in node.exc.keywords}
            given = _text(kw.get("description")) or _text(node.exc.args[0] if node.exc.args else None)
            text = given if given is not None else str(cls.description or "")
            yield f"{rel}:{node.lineno}", str(cls.error), text, endpoint


RAISES = list(authlib_raises())


def test_the_scan_finds_authlibs_errors() -> None:
    """The scan itself works: it sees the texts a client met before they were rewritten."""
    texts = {t for _, _, t, _ in RAISES}
    assert len(RAISES) >= 30, RAISES
    assert "The client cannot authenticate with methods: ['client_secret_basic', 'client_secret_post', 'none']" in texts
    assert "Invalid 'code' in request." in texts and "" in texts


@pytest.mark.parametrize(("where", "error", "text", "endpoint"), RAISES, ids=[r[0] for r in RAISES])
def test_every_authlib_description_is_rewritten(where: str, error: str, text: str, endpoint: Any) -> None:
    plain = describe(error, text, endpoint)
    assert plain != text, f"{where}: authlib's text reaches the client unchanged: {text!r}"
    assert plain != DEFAULT_TEXT, f"{where}: {error} {text!r} has no plain text of its own"
    assert_plain_description(plain)


def test_the_portals_own_descriptions_pass_through_made_safe() -> None:
    assert describe("invalid_target", "The resource is not a server of this portal.") == (
        "The resource is not a server of this portal.")  # fmt: skip
    assert describe("invalid_request", 'a "quoted" \\ text\n') == "a ?quoted? ? text?"


# -- what a client receives ------------------------------------------------------------------
SERVERS = f"""
[servers.petstore]
spec = "{PETSTORE}"
base_url = "http://127.0.0.1:9/api/v3"
"""


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPortal]:
    with running_portal(tmp_path_factory.mktemp("descriptions"), SERVERS,
                        portal="registrations_per_ip_hour = 100000\n") as running:  # fmt: skip
        yield running


def test_token_and_revoke_errors_read_as_plain_sentences(portal: RunningPortal) -> None:
    with ExitStack() as stack:
        public = stack.enter_context(new_flow(portal))
        confidential = stack.enter_context(new_flow(portal, token_endpoint_auth_method="client_secret_basic"))
        no_refresh = stack.enter_context(new_flow(portal, grant_types=["authorization_code"]))
        token_and_revoke_errors(portal, public, confidential, no_refresh)


def token_and_revoke_errors(portal: RunningPortal, public: Flow, confidential: Flow, no_refresh: Flow) -> None:
    seen: dict[str, str] = {}

    def error(name: str, path: str, status: int, code: str, data: dict[str, str], **kw: Any) -> None:
        with portal.http() as http:
            body = assert_oauth_error(http.post(path, data=data, **kw), status, code)
        seen[name] = body["error_description"]

    auth_code = {"grant_type": "authorization_code", "code": "cmp_code_x"}
    error("no grant_type", "/token", 400, "unsupported_grant_type", {"client_id": public.client_id})
    error("unknown grant_type", "/token", 400, "unsupported_grant_type",
          {"client_id": public.client_id, "grant_type": "password"})  # fmt: skip
    error("no client", "/token", 401, "invalid_client", auth_code)
    error("secret missing", "/token", 401, "invalid_client", {"client_id": confidential.client_id, **auth_code})
    error("wrong secret", "/token", 401, "invalid_client", auth_code, auth=(confidential.client_id, "wrong"))
    error("unknown client", "/token", 400, "invalid_client", {"client_id": "cmp_client_nobody", **auth_code})
    error("no code", "/token", 400, "invalid_request",
          {"client_id": public.client_id, "grant_type": "authorization_code"})  # fmt: skip
    error("bad code", "/token", 400, "invalid_grant", {"client_id": public.client_id, **auth_code})
    error("no refresh_token", "/token", 400, "invalid_request",
          {"client_id": public.client_id, "grant_type": "refresh_token"})  # fmt: skip
    error("bad refresh_token", "/token", 400, "invalid_grant",
          {"client_id": public.client_id, "grant_type": "refresh_token", "refresh_token": "cmp_rt_x"})  # fmt: skip
    error("grant not registered", "/token", 400, "unauthorized_client",
          {"client_id": no_refresh.client_id, "grant_type": "refresh_token", "refresh_token": "cmp_rt_x"})  # fmt: skip
    error("revoke without token", "/revoke", 400, "invalid_request", {"client_id": public.client_id})
    error("revoke with a bad hint", "/revoke", 400, "unsupported_token_type",
          {"client_id": public.client_id, "token": "x", "token_type_hint": "id_token"})  # fmt: skip
    error("revoke without client", "/revoke", 401, "invalid_client", {"token": "x"})

    code, _ = public.code()
    verifier = public.verifier
    error("wrong redirect_uri", "/token", 400, "invalid_grant", {"client_id": public.client_id, **auth_code,
          "code": code, "redirect_uri": "http://127.0.0.1:9/other", "code_verifier": verifier})  # fmt: skip
    code, _ = public.code()
    error("no verifier", "/token", 400, "invalid_request",
          {"client_id": public.client_id, **auth_code, "code": code, "redirect_uri": REDIRECT})  # fmt: skip
    code, _ = public.code()
    error("wrong verifier", "/token", 400, "invalid_grant", {"client_id": public.client_id, **auth_code,
          "code": code, "redirect_uri": REDIRECT, "code_verifier": "v" * 50})  # fmt: skip
    code, _ = public.code()
    tokens = public.exchange(code).json()
    widen = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "scope": "petstore:read x:y"}
    error("widening refresh", "/token", 400, "invalid_scope", {"client_id": public.client_id, **widen})
    error("another client's token", "/revoke", 400, "invalid_grant",
          {"client_id": no_refresh.client_id, "token": tokens["access_token"]})  # fmt: skip

    # the ones a developer most needs to act on say what to do, in the words of the protocol
    assert "client_secret" in seen["wrong secret"] and "public client" in seen["wrong secret"]
    assert "grant_type" in seen["no grant_type"] and "authorization_code or refresh_token" in seen["no grant_type"]
    assert "redirect_uri" in seen["wrong redirect_uri"]
    assert "code_verifier" in seen["no verifier"] and "code_verifier" in seen["wrong verifier"]
    assert "refresh_token grant" in seen["grant not registered"]
    assert "narrow" in seen["widening refresh"]
    assert "token_type_hint" in seen["revoke with a bad hint"]
    assert len(set(seen.values())) >= 14, seen  # specific texts, not one catch-all


def test_registration_errors_name_the_field_in_words(portal: RunningPortal) -> None:
    cases = [
        ({}, "invalid_redirect_uri", "redirect_uris is required"),
        ({"redirect_uris": [REDIRECT], "grant_types": ["password"]}, "invalid_client_metadata",
         "grant_types item 1 must be 'authorization_code' or 'refresh_token'"),
        ({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "private_key_jwt"}, "invalid_client_metadata",
         "token_endpoint_auth_method must be 'none', 'client_secret_basic' or 'client_secret_post'"),
        ({"redirect_uris": REDIRECT}, "invalid_redirect_uri", "redirect_uris must be a JSON array"),
        ({"redirect_uris": []}, "invalid_redirect_uri", "redirect_uris must not be empty"),
        ({"redirect_uris": [REDIRECT], "client_name": 5}, "invalid_client_metadata", "client_name must be a string"),
    ]  # fmt: skip
    with portal.http() as http:
        for meta, code, says in cases:
            body = assert_oauth_error(http.post("/register", json=meta), 400, code)
            assert body["error_description"] == says, (meta, body)


def test_authorization_errors_read_as_plain_sentences(portal: RunningPortal) -> None:
    with new_flow(portal) as flow:
        authorization_errors(flow)


def authorization_errors(flow: Flow) -> None:
    flow.consent_page()  # signs in
    redirected = [
        ({"response_type": "zzz"}, "unsupported_response_type", "response_type"),
        ({"response_type": "token"}, "unsupported_response_type", "response_type"),
        ({"code_challenge": "abc"}, "invalid_request", "code_challenge"),
    ]
    for overrides, code, names in redirected:
        q = redirect_query(flow.browser.get("/authorize", params=flow.authorize_params(**overrides)))
        assert q["error"] == code, q
        assert names in q["error_description"] and "zzz" not in q["error_description"], q
    doubled = [*flow.authorize_params().items(), ("code_challenge", "c" * 43)]
    q = redirect_query(flow.browser.get("/authorize", params=doubled))
    assert q["error_description"] == "The code_challenge parameter appears more than once in the authorization request."

    # not redirected (the client or its redirect URI cannot be trusted): the page says it plainly
    pages = [
        (flow.authorize_params(redirect_uri="http://127.0.0.1:9/evil"), "registered for this client"),
        (flow.authorize_params(client_id="cmp_client_nobody"), "names no client registered"),
        ([*flow.authorize_params().items(), ("scope", "petstore:read"), ("scope", "petstore:write")],
         "The scope parameter appears more than once"),
    ]  # fmt: skip
    for params, says in pages:
        r = flow.browser.get("/authorize", params=params)
        assert r.status_code == 400 and says in r.text, r.text[:2000]
        main = r.text.split("<main", 1)[-1]
        assert "Redirect URI" not in main and "Multiple &#39;" not in main and "does not exist" not in main

    # a denial: access_denied in words
    page = flow.consent_page()
    denied = redirect_query(flow.decide(page, approve=False))
    assert denied["error"] == "access_denied"
    assert denied["error_description"] == "The user declined the authorization request on the consent page."
