"""Plain-English ``error_description`` for every OAuth error the portal answers, in one place.

authlib's own descriptions are written for its developers: a Python list of auth methods
(``"... methods: ['none', 'client_secret_basic']"``), ``"Invalid 'code' in request."``, the
requested ``response_type`` echoed back as the whole description, or nothing at all. Each one an
endpoint can raise is rewritten here to a sentence that says what is wrong and which parameter or
step it concerns. The portal's own descriptions pass through unchanged (made RFC 6749 §5.2-safe:
printable ASCII without ``"`` and ``\\``).

The table is data: ``(error code, authlib's text as a regular expression, plain text)``; ``{0}``
in the plain text is the first group of the match (only for groups that come from authlib's own
constants, never from the request). tests/test_portal_descriptions.py reads authlib's sources for
every description its grants and endpoints can raise and checks that each one is rewritten.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from authlib.oauth2.base import OAuth2Error

__all__ = ["AUTHLIB_TEXTS", "EMPTY_TEXTS", "STATUS", "Endpoint", "describe", "plain_error", "safe_description"]

Endpoint = Literal["authorize", "token", "revoke", "register"]
_SAFE = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")
MAX_DESCRIPTION = 400


def safe_description(text: str) -> str:
    """RFC 6749 §5.2 restricts error_description to printable ASCII without ``"`` and ``\\``."""
    return _SAFE.sub("?", text)[:MAX_DESCRIPTION]


@dataclass(frozen=True)
class Rewrite:
    error: str  # the OAuth error code the text comes with
    authlib: re.Pattern[str]  # authlib's description (full match)
    plain: str  # what the client is told ({0}: the pattern's first group)


def _r(error: str, authlib: str, plain: str) -> Rewrite:
    return Rewrite(error, re.compile(authlib, re.DOTALL), plain)


_CLIENT_AUTH = (
    "The client could not be authenticated: send its client_id alone if it is a public client, or with its "
    "client_secret (HTTP Basic, or as form parameters) as it was registered."
)

# authlib 1.x texts (rfc6749 grants, client authentication and server; rfc7009; rfc7591; rfc7636).
AUTHLIB_TEXTS: tuple[Rewrite, ...] = (
    # client authentication (token, revoke)
    _r("invalid_client", r"The client cannot authenticate with methods: .*", _CLIENT_AUTH),
    _r("invalid_client", r"Missing 'client_id' parameter\.", "The client_id parameter is missing."),
    _r("invalid_client", r"The client does not exist on this server\.",
       "The client_id names no client registered with this portal (register it, or use its metadata document URL)."),
    _r("unauthorized_client", r"The client is not authorized to use 'grant_type=(authorization_code|refresh_token)'",
       "This client was not registered for the {0} grant (add it to the client's grant_types)."),
    _r("unauthorized_client", r"The client is not authorized to use 'response_type=.*'",
       "This client may only use response_type code."),
    # authorization request
    _r("invalid_request", r"Redirect URI .* is not supported by client\.",
       "The redirect_uri is not one of the redirect URIs registered for this client (they must match exactly)."),
    _r("invalid_request", r"Missing 'redirect_uri' in request\.",
       "The redirect_uri parameter is missing; it is required when the client has several redirect URIs."),
    _r("invalid_request", r"Multiple '(response_type|client_id|redirect_uri|scope|state)' in request\.",
       "The {0} parameter appears more than once in the authorization request."),
    _r("unsupported_response_type", r".*", "The response_type parameter must be code."),
    _r("access_denied", r"The resource owner or authorization server denied the request",
       "The user declined the authorization request on the consent page."),
    _r("invalid_scope", r"The requested scope is invalid, unknown, or malformed\.",
       "The scope parameter asks for more than this grant allows: a refresh may keep or narrow the granted "
       "scopes, never widen them."),
    # PKCE (RFC 7636)
    _r("invalid_request", r"Missing 'code_challenge'",
       "PKCE is required: send code_challenge with code_challenge_method S256."),
    _r("invalid_request", r"Multiple '(code_challenge|code_challenge_method)' in request\.",
       "The {0} parameter appears more than once in the authorization request."),
    _r("invalid_request", r"Invalid 'code_challenge'",
       "The code_challenge parameter must be 43 to 128 characters of A-Z, a-z, 0-9 and -._~ (the base64url "
       "SHA-256 of the code_verifier)."),
    _r("invalid_request", r"Unsupported 'code_challenge_method'", "The code_challenge_method parameter must be S256."),
    _r("invalid_request", r"Missing 'code_verifier'",
       "The code_verifier parameter is missing: send the PKCE verifier of the authorization request."),
    _r("invalid_request", r"Invalid 'code_verifier'",
       "The code_verifier parameter must be 43 to 128 characters of A-Z, a-z, 0-9 and -._~."),
    _r("invalid_request", r"The authorization request had no 'code_challenge', but a 'code_verifier' was provided\.",
       "A code_verifier was sent, but the authorization request had no code_challenge."),
    _r("invalid_grant", r"Code challenge failed\.",
       "The code_verifier does not match the code_challenge of the authorization request."),
    # token request
    _r("invalid_request", r"Missing 'code' in request\.", "The code parameter is missing."),
    _r("invalid_grant", r"Invalid 'code' in request\.",
       "The authorization code is unknown, expired or already used, or was issued to another client."),
    _r("invalid_grant", r"Invalid 'redirect_uri' in request\.",
       "The redirect_uri parameter must equal the redirect_uri of the authorization request."),
    _r("invalid_grant", r"There is no 'user' for this code\.",
       "The user who approved this authorization code can no longer sign in."),
    _r("invalid_request", r"Missing 'refresh_token' in request\.", "The refresh_token parameter is missing."),
    _r("invalid_request", r"There is no 'user' for this token\.",
       "The user of this refresh token can no longer sign in."),
    # anything authlib answers with no description of its own is in EMPTY_TEXTS
)  # fmt: skip

# When authlib gives no description: (endpoint, error) first, then (None, error).
EMPTY_TEXTS: dict[tuple[Endpoint | None, str], str] = {
    ("token", "invalid_grant"):
        "The refresh token is unknown, expired, revoked or already used, or was issued to another client.",
    ("revoke", "invalid_grant"): "The token was issued to another client.",
    ("revoke", "invalid_request"): "The token parameter is missing: send the token to revoke.",
    ("register", "invalid_request"): "The registration request must be a non-empty JSON object of client metadata.",
    ("register", "access_denied"): "Client registration is not allowed from here.",
    (None, "unapproved_software_statement"): "This portal does not accept software statements; send plain metadata.",
    (None, "invalid_software_statement"): "This portal does not accept software statements; send plain metadata.",
    (None, "unsupported_grant_type"): "The grant_type parameter must be authorization_code or refresh_token.",
    (None, "unsupported_token_type"): "The token_type_hint parameter must be access_token or refresh_token.",
    (None, "invalid_request"): "The request is missing a parameter or has one that cannot be used.",
    (None, "invalid_client"): _CLIENT_AUTH,
    (None, "invalid_grant"): "The authorization grant is not valid.",
    (None, "unauthorized_client"): "This client may not use this grant.",
    (None, "invalid_scope"): "The scope parameter names scopes this portal cannot grant.",
    (None, "access_denied"): "The request was denied.",
    (None, "invalid_client_metadata"): "The client metadata cannot be used.",
    (None, "invalid_redirect_uri"): "The redirect_uris of the client metadata cannot be used.",
    (None, "invalid_target"): "The resource parameter names no server of this portal.",
    (None, "server_error"): "The server failed.",
}  # fmt: skip
DEFAULT_TEXT = "The request cannot be used."


def describe(error: str, description: str | None, endpoint: Endpoint | None = None) -> str:
    """The description a client is shown for ``error`` (authlib's ``description``, if any)."""
    text = description or ""
    for rewrite in AUTHLIB_TEXTS:
        if rewrite.error == error:
            m = rewrite.authlib.fullmatch(text)
            if m is not None:
                return rewrite.plain.format(*m.groups())
    if not text.strip():
        return EMPTY_TEXTS.get((endpoint, error)) or EMPTY_TEXTS.get((None, error)) or DEFAULT_TEXT
    return safe_description(text)


# authlib's status where RFC 6749 §5.2 / RFC 7009 §2.2.1 say otherwise (it answers an unknown
# token_type_hint with 401, without the WWW-Authenticate a 401 needs).
STATUS: dict[str, int] = {"unsupported_token_type": 400}


def plain_error(error: OAuth2Error, endpoint: Endpoint | None) -> OAuth2Error:
    """``error`` with its description rewritten (in place: it is answered right after)."""
    error.description = describe(str(error.error), error.description, endpoint)
    error.status_code = STATUS.get(str(error.error), error.status_code)
    return error
