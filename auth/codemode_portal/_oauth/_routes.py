"""HTTP endpoints of the authorization server (Starlette), running authlib on worker threads.

``/authorize`` (GET shows sign-in or consent, POST is the consent decision), ``/token``,
``/revoke``, ``/register`` and RFC 8414 metadata. Every error is RFC 6749 §5.2 JSON, or an
error redirect to a verified redirect URI (with ``state`` and RFC 9207 ``iss``), or an error
page when the client or its redirect URI cannot be trusted. No stack trace ever leaves.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

import anyio
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.base import OAuth2Error
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from .._errors import StoreError
from .._scopes import ServerScopes
from .._store import User
from .._web import MAX_FORM_BYTES, Web, read_form
from ._clients import MetadataProblem
from ._descriptions import plain_error
from ._requests import OAuthResponse, PortalJsonRequest, PortalRequest
from ._server import PortalAuthorizationServer

__all__ = ["as_metadata", "oauth_routes"]

log = logging.getLogger("codemode.portal.oauth")
MAX_QUERY = 16_000
MAX_JSON = 64_000
CONSENT_FIELDS = ("csrf", "decision", "grant_scope")
JSON_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# Parameters authlib may quote in an error description: RFC 6749 allows only printable ASCII
# without '"' and '\\' there, so such values are refused up front (authlib would raise otherwise).
ECHOED = frozenset({"client_id", "redirect_uri", "response_type", "scope", "code_challenge_method", "grant_type",
                    "token_type_hint", "response_mode"})  # fmt: skip


def bad_parameter(pairs: list[tuple[str, str]]) -> str | None:
    """The name of a parameter whose value cannot be used, or None."""
    for k, v in pairs:
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in v):
            return k
        if k in ECHOED and any(ord(c) > 0x7E or c in '"\\' for c in v):
            return k
    return None


def basic_auth_problem(header: str | None) -> bool:
    """True when an ``Authorization: Basic`` header is not base64 of UTF-8 ``id:secret``."""
    if header is None or not header[:6].lower() == "basic ":
        return False
    try:
        text = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return True
    return ":" not in text or bad_parameter([("client_id", text)]) is not None


def as_metadata(server: PortalAuthorizationServer) -> dict[str, Any]:
    ctx = server.ctx
    issuer = ctx.issuer
    methods = ["none", "client_secret_basic", "client_secret_post"]
    meta: dict[str, Any] = {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "revocation_endpoint": f"{issuer}/revoke",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_methods_supported": methods,
        "revocation_endpoint_auth_methods_supported": methods,
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ctx.scopes_supported(),
        "authorization_response_iss_parameter_supported": True,
        "client_id_metadata_document_supported": True,
        "service_documentation": f"{issuer}/",
    }
    if ctx.settings.dynamic_registration:
        meta["registration_endpoint"] = f"{issuer}/register"
    return meta


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={**JSON_HEADERS, **(headers or {})})


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return _json(status, {"error": error, "error_description": description})


def oauth_routes(web: Web, server: PortalAuthorizationServer, titles: Callable[[str], str]) -> list[BaseRoute]:
    ctx = server.ctx
    issuer = ctx.issuer

    def to_response(result: OAuthResponse, *, authorize: bool = False) -> Response:
        location = result.location
        if location is not None:
            if authorize:  # RFC 9207: every authorization response names the issuer
                location = add_params_to_uri(location, [("iss", issuer)])
            return RedirectResponse(location, status_code=302, headers={"Cache-Control": "no-store"})
        headers = {k: v for k, v in result.headers if k.lower() != "content-type"}
        return _json(result.status, result.body if isinstance(result.body, dict) else {}, headers)

    async def run(fn: Callable[[], OAuthResponse]) -> OAuthResponse:
        try:
            return await anyio.to_thread.run_sync(fn)
        except (OAuth2Error, MetadataProblem, StoreError):  # answers, not bugs (StoreError: a 503 from the app)
            raise
        except Exception:  # a bug: logged here, never shown (RFC 6749 server_error)
            log.exception("the authorization server failed on a request")
            return OAuthResponse(500, {"error": "server_error", "error_description": "The server failed."},
                                 [("Cache-Control", "no-store")])  # fmt: skip

    def request_for(request: Request, pairs: list[tuple[str, str]], *, form: bool, user: User | None) -> PortalRequest:
        req = PortalRequest(request.method, f"{issuer}{request.url.path}", request.headers, pairs, form=form)
        req.user = user
        req.portal_address = web.address(request)
        return req

    # -- /authorize ----------------------------------------------------------------------
    def validate(req: PortalRequest) -> Any:
        """authlib's consent validation; raises OAuth2Error (redirectable or not)."""
        client_id = req.payload.client_id
        if client_id:
            server.lookup_client(client_id, fresh=True)  # fetch a metadata document now (MetadataProblem)
        return server.get_consent_grant(req, end_user=req.user)

    async def authorize_error(request: Request, exc: OAuth2Error | MetadataProblem) -> Response:
        session = await web.sessions.load(request)
        if isinstance(exc, OAuth2Error):
            plain_error(exc, "authorize")
        if isinstance(exc, OAuth2Error) and exc.redirect_uri:
            status, _, headers = exc()
            return to_response(OAuthResponse(status, "", list(headers)), authorize=True)
        if isinstance(exc, MetadataProblem):
            message = f"The application's metadata document cannot be used: {exc}."
        else:
            message = f"{exc.error}: {exc.description}"
        return web.error(session, 400, "This authorization request cannot be used", message,
                         "Nothing was shared with the application. Go back to it and try again.")  # fmt: skip

    async def authorize_page(request: Request) -> Response:
        if len(request.url.query) > MAX_QUERY:
            session = await web.sessions.load(request)
            return web.error(session, 414, "Request too long", "The authorization request is too long.")
        session = await web.sessions.load(request)
        pairs = [(k, v) for k, v in request.query_params.multi_items()]
        bad = bad_parameter(pairs)
        if bad is not None:
            return web.error(session, 400, "This authorization request cannot be used",
                             f"The parameter {bad[:40]!r} has characters that are not allowed.")  # fmt: skip
        req = request_for(request, pairs, form=False, user=session.user)
        try:
            grant = await anyio.to_thread.run_sync(validate, req)
        except (OAuth2Error, MetadataProblem) as exc:
            return await authorize_error(request, exc)
        except StoreError:  # the database is down: the app's 503 page
            raise
        except Exception:  # a bug: logged, shown as a plain error page
            log.exception("validating an authorization request failed")
            return web.error(session, 500, "Something went wrong", "The portal could not handle this request.")
        if session.user is None:
            target = "/authorize?" + urlencode(pairs)
            return web.sessions.attach(
                RedirectResponse("/login?" + urlencode({"next": target}), status_code=303,
                                 headers={"Cache-Control": "no-store"}), session)  # fmt: skip
        return consent_page(session, req, grant, pairs)

    def consent_page(session: Any, req: PortalRequest, grant: Any, pairs: list[tuple[str, str]]) -> Response:
        assert req.portal_server is not None
        catalogue: ServerScopes = ctx.servers[req.portal_server]
        infos = {i.name: i for i in catalogue.infos}
        scopes = [
            {"name": s, "description": infos[s].description if s in infos else s, "required": s == catalogue.read}
            for s in (catalogue.read, *[s for s in req.portal_requested if s != catalogue.read])
        ]
        client = req.client.record
        redirect = urlsplit(grant.redirect_uri)
        origin = f"{redirect.scheme}://{redirect.netloc}"
        return web.render(
            session, "consent.html", form_targets=[origin], title=f"Allow access to {req.portal_server}",
            server_title=titles(req.portal_server), server=req.portal_server, resource=req.portal_resource,
            client_name=client.name, client_id=client.client_id, client_kind=client.kind,
            redirect_host=redirect.netloc, scopes=scopes, params=pairs,
        )  # fmt: skip

    async def authorize_decision(request: Request) -> Response:
        session = await web.sessions.load(request)
        pairs = await read_form(request)
        if pairs is None:
            return web.error(session, 400, "Bad request", "The consent form could not be read.")
        form = dict(pairs)
        if not web.sessions.csrf_ok(session, form.get("csrf")):
            return web.error(session, 403, "Form expired", "The consent form expired or came from elsewhere.",
                             "Nothing was shared. Go back to the application and start again.")  # fmt: skip
        if session.user is None:
            return web.error(session, 403, "Not signed in", "Sign in first, then start again from the application.")
        params = [(k, v) for k, v in pairs if k not in CONSENT_FIELDS]
        if bad_parameter(params) is not None:
            return web.error(session, 400, "Bad request", "The consent form carries characters that are not allowed.")
        req = request_for(request, params, form=False, user=session.user)
        approve = form.get("decision") == "approve"
        chosen = [v for k, v in pairs if k == "grant_scope"]

        def decide() -> OAuthResponse:
            grant = validate(req)
            if approve:
                catalogue = ctx.servers[req.portal_server or ""]
                allowed = set(req.portal_requested) | {catalogue.read}
                req.portal_approved = tuple(dict.fromkeys([catalogue.read, *[s for s in chosen if s in allowed]]))
            else:
                assert req.user is not None
                ctx.audit.record("consent_denied", user_id=req.user.id, client_id=req.payload.client_id[:2000],
                                 server=req.portal_server, status="denied")  # fmt: skip
            result: OAuthResponse = server.create_authorization_response(
                req, grant_user=session.user if approve else None, grant=grant
            )
            return result

        try:
            result = await run(decide)
        except (OAuth2Error, MetadataProblem) as exc:
            return await authorize_error(request, exc)
        return to_response(result, authorize=True)

    # -- /token, /revoke, /register ------------------------------------------------------
    async def form_pairs(request: Request) -> list[tuple[str, str]] | JSONResponse:
        pairs = await read_form(request)
        if pairs is None:
            ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if ctype != "application/x-www-form-urlencoded":
                return _oauth_error(400, "invalid_request", "Send application/x-www-form-urlencoded parameters.")
            return _oauth_error(400, "invalid_request",
                                f"The form could not be read: at most {MAX_FORM_BYTES:,} bytes, in UTF-8.")  # fmt: skip
        dup = {k for k, _ in pairs if sum(1 for k2, _ in pairs if k2 == k) > 1} - {"resource"}
        if dup:
            return _oauth_error(400, "invalid_request", "A parameter is repeated.")
        bad = bad_parameter(pairs)
        if bad is not None:
            return _oauth_error(400, "invalid_request", "A parameter has characters that are not allowed.")
        if basic_auth_problem(request.headers.get("authorization")):
            return _json(401, {"error": "invalid_client", "error_description": "Malformed Basic credentials."},
                         {"WWW-Authenticate": 'Basic realm="token"'})  # fmt: skip
        return pairs

    async def token(request: Request) -> Response:
        pairs = await form_pairs(request)
        if isinstance(pairs, JSONResponse):
            return pairs
        req = request_for(request, pairs, form=True, user=None)
        return to_response(await run(lambda: server.create_token_response(req)))

    async def revoke(request: Request) -> Response:
        pairs = await form_pairs(request)
        if isinstance(pairs, JSONResponse):
            return pairs
        req = request_for(request, pairs, form=True, user=None)
        return to_response(await run(lambda: server.create_endpoint_response("revocation", req)))

    async def register(request: Request) -> Response:
        if not ctx.settings.dynamic_registration:
            return _oauth_error(404, "invalid_request", "Dynamic client registration is turned off.")
        ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            return _oauth_error(400, "invalid_client_metadata", "Send the client metadata as application/json.")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_JSON:
                return _oauth_error(413, "invalid_client_metadata", "The client metadata is too large.")
        try:
            data = json.loads(bytes(body))
        except (ValueError, RecursionError):
            return _oauth_error(400, "invalid_client_metadata", "The client metadata is not valid JSON.")
        req = PortalJsonRequest("POST", f"{issuer}/register", request.headers, data, web.address(request))
        return to_response(await run(lambda: server.create_endpoint_response("client_registration", req)))

    async def metadata(request: Request) -> Response:
        return JSONResponse(as_metadata(server), headers={"Cache-Control": "public, max-age=300"})

    prefix = urlsplit(issuer).path.rstrip("/")
    wellknown = ["/.well-known/oauth-authorization-server"]
    if prefix:
        wellknown.append(f"/.well-known/oauth-authorization-server{prefix}")
    return [
        Route("/authorize", authorize_page, methods=["GET"]),
        Route("/authorize", authorize_decision, methods=["POST"]),
        Route("/token", token, methods=["POST"]),
        Route("/revoke", revoke, methods=["POST"]),
        Route("/register", register, methods=["POST"]),
        *[Route(p, metadata, methods=["GET"]) for p in wellknown],
    ]
