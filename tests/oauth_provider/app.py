"""A real OAuth 2.0 + OpenID Connect provider for tests, built on authlib's Flask server support.

Run from ``.venv-upstreams`` (``scripts/setup-upstreams.sh`` installs Flask and authlib there)::

    python tests/oauth_provider/app.py --port 8765 --user alice:secret --user bob \
        --client '{"client_id": "portal", "client_secret": "s3", "redirect_uris": ["http://127.0.0.1:9000/cb"]}'

It serves, on loopback only:

- the authorization-code grant with PKCE (S256 only, required), confidential clients
  (``client_secret_basic``/``_post``) and public ones (``none``); refresh tokens that rotate;
  RFC 7009 revocation; RFC 9207 ``iss`` in authorization responses;
- OpenID Connect: discovery, JWKS, RS256 ``id_token`` with ``nonce``, ``email`` and
  ``preferred_username``, and ``/userinfo``;
- a sign-in form and a consent form (CSRF-protected; the consent can narrow the scopes or deny);
- a protected notes API (``/api/me``, ``/api/notes``) described by ``/openapi.json``;
- ``/admin/clients`` and ``/admin/users`` (``Authorization: Bearer <admin token>``) to register
  clients and users at run time.

On start it prints one JSON line to stdout: the base URL, the admin token and the users' passwords.
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import json
import logging
import secrets
import sys
import time
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import urlsplit

from authlib.common.security import generate_token
from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector, current_token
from authlib.oauth2.rfc6749 import OAuth2Error
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant, RefreshTokenGrant
from authlib.oauth2.rfc6750 import BearerTokenGenerator, BearerTokenValidator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc9207 import IssuerParameter
from authlib.oidc.core import OpenIDCode, UserInfo
from flask import Flask, Response, g, jsonify, redirect, request, session
from joserfc.jwk import RSAKey
from openapi import API_SCOPES, openapi_document
from pages import consent_page, login_page
from store import AuthCode, Client, Store, Token, User
from werkzeug.serving import make_server
from werkzeug.wrappers import Response as WerkzeugResponse

OIDC_SCOPES = ("openid", "profile", "email")
ALL_SCOPES = (*OIDC_SCOPES, *API_SCOPES)
DEFAULT_ACCESS_TOKEN_TTL = 3600
NOTE_MAX_CHARS = 10_000


class Refused(Exception):
    """A request this provider refuses: answered as JSON ``{"error", "error_description"}``."""

    ERRORS = {400: "invalid_request", 401: "unauthorized", 404: "not_found"}  # noqa: RUF012

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status, self.description = status, description
        self.error = self.ERRORS.get(status, "error")


def fail(status: int, description: str) -> NoReturn:
    raise Refused(status, description)


@dataclass(frozen=True)
class Settings:
    issuer: str
    admin_token: str
    access_token_ttl: int
    cookie_name: str


class S256Challenge(CodeChallenge):  # type: ignore[misc]
    """PKCE is required, and only with S256 (authlib's default also accepts ``plain`` or none)."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]  # noqa: RUF012 (authlib's class attribute)

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("Missing 'code_challenge': PKCE with S256 is required")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("'code_challenge_method' must be S256")
        super().validate_code_challenge(grant, redirect_uri)


def create_app(settings: Settings, store: Store, key: RSAKey) -> Flask:
    app = Flask(__name__)
    app.secret_key = secrets.token_bytes(32)
    app.config.update(SESSION_COOKIE_NAME=settings.cookie_name, SESSION_COOKIE_SAMESITE="Lax")
    issuer = settings.issuer

    class CodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
        TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]  # noqa: RUF012

        def save_authorization_code(self, code: str, req: Any) -> None:
            data = req.payload.data
            store.save_code(
                AuthCode(
                    code=code,
                    client_id=req.client.client_id,
                    username=req.user.username,
                    redirect_uri=data.get("redirect_uri") or "",
                    scope=g.get("granted_scope", req.scope or ""),
                    code_challenge=data.get("code_challenge"),
                    code_challenge_method=data.get("code_challenge_method"),
                    nonce=data.get("nonce"),
                    auth_time=int(session.get("auth_time", time.time())),
                )
            )

        def query_authorization_code(self, code: str, client: Client) -> AuthCode | None:
            return store.take_code(code, client.client_id)

        def delete_authorization_code(self, authorization_code: AuthCode) -> None:
            store.delete_code(authorization_code.code)

        def authenticate_user(self, authorization_code: AuthCode) -> User | None:
            return store.users.get(authorization_code.username)

    class RotatingRefresh(RefreshTokenGrant):  # type: ignore[misc]
        TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]  # noqa: RUF012
        INCLUDE_NEW_REFRESH_TOKEN = True

        def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
            return store.refresh(refresh_token)

        def authenticate_user(self, refresh_token: Token) -> User:
            return refresh_token.user

        def revoke_old_credential(self, refresh_token: Token) -> None:
            with store.lock:
                refresh_token.refresh_revoked = True

    class OpenID(OpenIDCode):  # type: ignore[misc]
        def exists_nonce(self, nonce: str, req: Any) -> bool:
            return (req.payload.client_id, nonce) in store.used_nonces

        def resolve_client_private_key(self, client: Client) -> RSAKey:
            return key

        def get_client_algorithm(self, client: Client) -> str:
            return "RS256"

        def get_encode_header(self, client: Client) -> dict[str, str]:
            return {"alg": "RS256", "kid": key.kid or "", "typ": "JWT"}

        def get_client_claims(self, client: Client) -> dict[str, Any]:
            return {"iss": issuer, "aud": [client.client_id]}

        def generate_user_info(self, user: User, scope: str) -> UserInfo:
            return user_info(user, scope)

    class Revocation(RevocationEndpoint):  # type: ignore[misc]
        CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]  # noqa: RUF012

        def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
            with store.lock:
                if token_type_hint != "refresh_token" and token_string in store.by_access:
                    return store.by_access[token_string]
                return store.by_refresh.get(token_string) or store.by_access.get(token_string)

        def revoke_token(self, token: Token, req: Any) -> None:
            # Revoking a refresh token ends its access token too (RFC 7009 §2.1).
            with store.lock:
                token.access_revoked = True
                if req.form.get("token") == token.refresh_token:
                    token.refresh_revoked = True

    class Iss(IssuerParameter):  # type: ignore[misc]
        def get_issuer(self) -> str:
            return issuer

    class Validator(BearerTokenValidator):  # type: ignore[misc]
        def authenticate_token(self, token_string: str) -> Token | None:
            return store.access(token_string)

    def save_token(token: dict[str, Any], req: Any) -> None:
        store.save_token(
            Token(
                client=req.client,
                user=req.user,
                scope=token.get("scope", ""),
                access_token=token["access_token"],
                refresh_token=token.get("refresh_token"),
                expires_in=int(token["expires_in"]),
            )
        )

    def expires_in(client: Client, grant_type: str) -> int:
        return client.access_token_ttl or settings.access_token_ttl

    server = AuthorizationServer(app, query_client=store.clients.get, save_token=save_token)
    server.register_token_generator(
        "default", BearerTokenGenerator(lambda **_: generate_token(42), lambda **_: generate_token(48), expires_in)
    )
    server.scopes_supported = list(ALL_SCOPES)
    server.register_grant(CodeGrant, [S256Challenge(required=True), OpenID(require_nonce=False)])
    server.register_grant(RotatingRefresh)
    server.register_endpoint(Revocation)
    server.register_extension(Iss())
    require_oauth = ResourceProtector()
    require_oauth.register_token_validator(Validator())

    def current_user() -> User | None:
        name = session.get("user")
        return store.users.get(name) if isinstance(name, str) else None

    def csrf() -> str:
        if "csrf" not in session:
            session["csrf"] = secrets.token_urlsafe(24)
        return str(session["csrf"])

    def check_csrf() -> None:
        sent = request.form.get("csrf_token", "")
        if not sent or not hmac.compare_digest(sent, str(session.get("csrf", ""))):
            fail(400, "CSRF token missing or wrong")

    def oauth_error(error: OAuth2Error) -> Response:
        return server.handle_error_response(None, error)  # type: ignore[no-any-return]

    def html(body: str, status: int = 200) -> Response:
        response = Response(body, status=status, mimetype="text/html")
        response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/authorize")
    def authorize_form() -> Response:
        user = current_user()
        try:
            grant = server.get_consent_grant(end_user=user)
        except OAuth2Error as error:
            return oauth_error(error)
        if user is None:
            return html(login_page(action="/login", csrf=csrf(), next_url=request.full_path))
        scopes = (grant.request.scope or "").split()
        return html(
            consent_page(
                action=request.full_path,
                csrf=csrf(),
                client_id=grant.client.client_id,
                username=user.username,
                scopes=scopes,
            )
        )

    @app.post("/authorize")
    def authorize_decision() -> Response:
        check_csrf()
        user = current_user()
        if user is None:
            return html(login_page(action="/login", csrf=csrf(), next_url=request.full_path), 401)
        try:
            grant = server.get_consent_grant(end_user=user)
        except OAuth2Error as error:
            return oauth_error(error)
        if request.form.get("decision") != "approve":
            return server.create_authorization_response(grant_user=None, grant=grant)  # type: ignore[no-any-return]
        asked = (grant.request.scope or "").split()
        chosen = set(request.form.getlist("grant_scope"))
        g.granted_scope = " ".join(s for s in asked if s in chosen)
        return server.create_authorization_response(grant_user=user, grant=grant)  # type: ignore[no-any-return]

    @app.post("/login")
    def login() -> WerkzeugResponse:
        check_csrf()
        next_url = request.form.get("next", "")
        if not next_url.startswith("/authorize?"):
            fail(400, "next must be an /authorize URL of this provider")
        username = request.form.get("username", "")
        user = store.users.get(username)
        if user is None or not user.check_password(request.form.get("password", "")):
            page = login_page(
                action="/login", csrf=csrf(), next_url=next_url, error="Wrong username or password.", username=username
            )
            return html(page, 401)
        session.clear()
        session.update(user=user.username, auth_time=int(time.time()), csrf=secrets.token_urlsafe(24))
        return redirect(next_url, 303)

    @app.get("/logout")
    def logout() -> Response:
        session.clear()
        return html("<p>Signed out.</p>")

    @app.post("/token")
    def token() -> Response:
        return server.create_token_response()  # type: ignore[no-any-return]

    @app.post("/revoke")
    def revoke() -> Response:
        return server.create_endpoint_response(RevocationEndpoint.ENDPOINT_NAME)  # type: ignore[no-any-return]

    @app.get("/userinfo")
    @require_oauth("openid")
    def userinfo() -> Response:
        return jsonify(dict(user_info(current_token.user, current_token.scope)))

    @app.get("/jwks.json")
    def jwks() -> Response:
        return jsonify({"keys": [key.as_dict(private=False)]})

    @app.get("/.well-known/openid-configuration")
    @app.get("/.well-known/oauth-authorization-server")
    def metadata() -> Response:
        return jsonify(provider_metadata(issuer))

    @app.get("/openapi.json")
    def openapi() -> Response:
        return jsonify(openapi_document(issuer))

    @app.get("/api/me")
    @require_oauth()
    def me() -> Response:
        user: User = current_token.user
        return jsonify(
            sub=user.sub,
            username=user.username,
            email=user.email,
            client_id=current_token.client.client_id,
            scope=current_token.scope,
        )

    def my_notes() -> dict[int, dict[str, Any]]:
        return store.notes.setdefault(current_token.user.username, {})

    def note_text() -> str:
        body = request.get_json(silent=True)
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str) or len(text) > NOTE_MAX_CHARS:
            fail(400, f"body must be {{'text': string of at most {NOTE_MAX_CHARS} characters}}")
        return text

    @app.get("/api/notes")
    @require_oauth("notes:read")
    def list_notes() -> Response:
        with store.lock:
            return jsonify(list(my_notes().values()))

    @app.post("/api/notes")
    @require_oauth("notes:write")
    def create_note() -> tuple[Response, int]:
        text = note_text()
        with store.lock:
            note = {"id": store.next_note_id, "text": text, "owner": current_token.user.username}
            store.next_note_id += 1
            my_notes()[note["id"]] = note
        return jsonify(note), 201

    def my_note(note_id: int) -> dict[str, Any]:
        note = my_notes().get(note_id)
        if note is None:
            fail(404, "no such note")
        return note

    @app.get("/api/notes/<int:note_id>")
    @require_oauth("notes:read")
    def get_note(note_id: int) -> Response:
        with store.lock:
            return jsonify(my_note(note_id))

    @app.put("/api/notes/<int:note_id>")
    @require_oauth("notes:write")
    def update_note(note_id: int) -> Response:
        text = note_text()
        with store.lock:
            note = my_note(note_id)
            note["text"] = text
            return jsonify(note)

    @app.delete("/api/notes/<int:note_id>")
    @require_oauth("notes:write")
    def delete_note(note_id: int) -> tuple[str, int]:
        with store.lock:
            my_note(note_id)
            del my_notes()[note_id]
        return "", 204

    @app.errorhandler(Refused)
    def refused(error: Refused) -> tuple[Response, int]:
        return jsonify(error=error.error, error_description=error.description), error.status

    def admin() -> dict[str, Any]:
        sent = request.headers.get("Authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {settings.admin_token}".encode()):
            fail(401, "admin token missing or wrong")
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            fail(400, "body must be a JSON object")
        return body

    @app.post("/admin/clients")
    def add_client() -> tuple[Response, int]:
        try:
            client = client_from_json(admin())
        except ValueError as exc:
            fail(400, str(exc))
        store.add_client(client)
        return jsonify(client.public()), 201

    @app.post("/admin/users")
    def add_user() -> tuple[Response, int]:
        body = admin()
        username, password = body.get("username"), body.get("password")
        if not isinstance(username, str) or not username or not isinstance(password, str | None):
            fail(400, "body must be {'username': string, 'password': string (optional)}")
        user = store.add_user(username, password)
        return jsonify(username=user.username, password=user.password, sub=user.sub), 201

    return app


def user_info(user: User, scope: str) -> UserInfo:
    scopes = scope.split()
    info = UserInfo(sub=user.sub)
    if "profile" in scopes:
        info.update(preferred_username=user.username, name=user.username.title())
    if "email" in scopes:
        info.update(email=user.email, email_verified=True)
    return info


def provider_metadata(issuer: str) -> dict[str, Any]:
    auth_methods = ["client_secret_basic", "client_secret_post", "none"]
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "revocation_endpoint": f"{issuer}/revoke",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "jwks_uri": f"{issuer}/jwks.json",
        "scopes_supported": list(ALL_SCOPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "email", "preferred_username"],
        "authorization_response_iss_parameter_supported": True,
    }


def client_from_json(data: dict[str, Any]) -> Client:
    """A client from ``{"client_id", "client_secret" (null: public), "redirect_uris", "scope",
    "access_token_ttl"}``; a missing id or secret is generated."""
    uris = data.get("redirect_uris")
    if not isinstance(uris, list) or not uris or not all(isinstance(u, str) and urlsplit(u).scheme for u in uris):
        raise ValueError("redirect_uris must be a non-empty list of absolute URLs")
    ttl = data.get("access_token_ttl")
    if ttl is not None and (not isinstance(ttl, int) or ttl < 1):
        raise ValueError("access_token_ttl must be a positive integer (seconds)")
    secret = data["client_secret"] if "client_secret" in data else secrets.token_urlsafe(24)
    if secret is not None and not isinstance(secret, str):
        raise ValueError("client_secret must be a string, or null for a public client")
    return Client(
        client_id=str(data.get("client_id") or f"client-{secrets.token_hex(4)}"),
        client_secret=secret,
        redirect_uris=list(uris),
        scope=str(data.get("scope") or " ".join(ALL_SCOPES)),
        access_token_ttl=ttl,
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--issuer", help="default: http://HOST:PORT")
    user_help = "a user (repeatable; a missing password is generated); default: alice and bob"
    parser.add_argument("--user", action="append", default=[], metavar="NAME[:PASSWORD]", help=user_help)
    client_help = 'a client: {"client_id", "client_secret" (null: public), "redirect_uris": [...], "scope"}'
    parser.add_argument("--client", action="append", default=[], metavar="JSON", help=client_help)
    parser.add_argument("--access-token-ttl", type=int, default=DEFAULT_ACCESS_TOKEN_TTL, help="seconds")
    parser.add_argument("--admin-token", help="default: generated")
    args = parser.parse_args(argv)
    if not ipaddress.ip_address(args.host).is_loopback:
        parser.error("--host must be a loopback address: this provider is for tests on this machine")
    if args.access_token_ttl < 1:
        parser.error("--access-token-ttl must be at least 1 second")
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    issuer = (args.issuer or f"http://{args.host}:{args.port}").rstrip("/")
    store = Store()
    for spec in args.user or ["alice", "bob"]:
        name, _, password = spec.partition(":")
        store.add_user(name, password or None)
    for raw in args.client:
        try:
            store.add_client(client_from_json(json.loads(raw)))
        except (ValueError, TypeError) as exc:
            sys.exit(f"--client {raw!r}: {exc}")
    settings = Settings(
        issuer=issuer,
        admin_token=args.admin_token or secrets.token_urlsafe(24),
        access_token_ttl=args.access_token_ttl,
        cookie_name=f"test_provider_{args.port}",  # cookies are shared across ports of one host
    )
    key = RSAKey.generate_key(2048, parameters={"use": "sig", "alg": "RS256"}, auto_kid=True)
    app = create_app(settings, store, key)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server(args.host, args.port, app, threaded=True)
    ready = {
        "base_url": issuer,
        "issuer": issuer,
        "admin_token": settings.admin_token,
        "users": {u.username: u.password for u in store.users.values()},
        "clients": [c.public() for c in store.clients.values()],
    }
    print(json.dumps(ready), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
