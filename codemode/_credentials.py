"""Upstream credentials, resolved from the spec's security schemes and the environment.

Guest code never sees a credential: the host injects it into each outgoing request.

Environment variables
---------------------
Each security scheme is configured through variables named after it: the prefix
(``CODEMODE_`` by default) plus the scheme name in upper snake case. Runs of characters
other than ASCII letters and digits become ``_``, and an ``_`` goes before each capital
that follows a lower-case letter or digit: ``api_key`` → ``CODEMODE_API_KEY``,
``petstore-auth`` → ``CODEMODE_PETSTORE_AUTH``, ``bearerAuth`` → ``CODEMODE_BEARER_AUTH``,
``OAuth2`` → ``CODEMODE_OAUTH2``. Below, ``<NAME>`` is that variable name.

============================  ===============================================================
scheme                        variables
============================  ===============================================================
apiKey (header/query/cookie)  ``<NAME>``: the key, sent under the scheme's parameter name
http bearer                   ``<NAME>``: the token, sent as ``Authorization: Bearer <token>``
http basic                    ``<NAME>_USERNAME`` and ``<NAME>_PASSWORD``, or ``<NAME>`` as
                              ``user:pass``
http, other schemes           ``<NAME>``: sent as ``Authorization: <Scheme> <value>``
oauth2 client credentials     ``<NAME>_CLIENT_ID`` and ``<NAME>_CLIENT_SECRET``; the token URL
                              comes from the spec, ``<NAME>_TOKEN_URL`` overrides it. The
                              token is fetched on first use, cached until 30 s before it
                              expires, and sent as a bearer token.
oauth2 / openIdConnect        ``<NAME>``: a ready access token, sent as a bearer token
                              (takes precedence over client credentials)
============================  ===============================================================

mutualTLS and http digest are not supported. :meth:`Credentials.describe` lists which
schemes are configured and which variables are missing (names only, never values).

Secrets shorter than :data:`~codemode._scrub.MIN_SUBSTRING_LENGTH` characters cannot be
recognised inside longer text, so they are refused at start-up (``config.short_secret``).

This module also holds the two rules of the credential boundary that do not depend on how
requests are sent: :func:`seed_scrubber` (the one place a server's scrubber learns its
secrets) and :func:`guest_override` (a guest value may never replace a static header or an
injected credential).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from codemode._errors import ConfigError, UpstreamError
from codemode._ir import SecurityScheme
from codemode._scrub import MIN_SUBSTRING_LENGTH, Scrubber, basic_auth_forms

if TYPE_CHECKING:
    from codemode._upstream_types import UpstreamRequest

__all__ = [
    "DEFAULT_PREFIX",
    "TOKEN_REFRESH_MARGIN_SECONDS",
    "Credentials",
    "Reserved",
    "env_var_name",
    "guest_override",
    "header_secrets",
    "is_credential_header",
    "seed_scrubber",
]

#: ``(location, lower-case name)`` pairs a guest value may not set: ``header``, ``query``, ``cookie``.
Reserved = frozenset[tuple[str, str]]
_CREDENTIAL_WORDS = ("auth", "key", "token", "secret", "session", "password", "passwd", "signature", "credential")

DEFAULT_PREFIX = "CODEMODE_"
TOKEN_REFRESH_MARGIN_SECONDS = 30.0

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_ALNUM = re.compile(r"[^A-Za-z0-9]+")


def env_var_name(scheme_name: str, prefix: str = DEFAULT_PREFIX) -> str:
    """``api_key`` → ``CODEMODE_API_KEY``; ``bearerAuth`` → ``CODEMODE_BEARER_AUTH``."""
    snake = _NON_ALNUM.sub("_", _CAMEL.sub("_", scheme_name)).strip("_").upper()
    return prefix + snake


@dataclass(frozen=True)
class _Inject:
    """Where and what to put in a request."""

    location: str  # header | query | cookie
    name: str
    value: str


@dataclass
class _ClientCredentials:
    """OAuth2 client-credentials grant with a cached token."""

    scheme: str
    client_id: str
    client_secret: str
    token_url: str
    scopes: tuple[str, ...]
    token: str | None = None
    expires_at: float | None = None  # monotonic time; None = no expiry given
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def fresh(self, now: float) -> bool:
        if self.token is None:
            return False
        return self.expires_at is None or now < self.expires_at - TOKEN_REFRESH_MARGIN_SECONDS


class Credentials:
    """Credentials per security scheme name; build with :meth:`from_env`."""

    def __init__(
        self,
        static: Mapping[str, _Inject],
        oauth: Mapping[str, _ClientCredentials],
        *,
        descriptions: Iterable[str] = (),
        secrets: Iterable[str] = (),
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._static = dict(static)
        self._oauth = dict(oauth)
        self._descriptions = list(descriptions)
        self._secrets = set(secrets)
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._verify_tls = True
        self._on_secret: list[Callable[[str], None]] = []
        self._clock = clock

    def __repr__(self) -> str:
        return f"<Credentials configured={sorted(self.configured())}>"

    @classmethod
    def from_env(
        cls,
        schemes: Mapping[str, SecurityScheme],
        env: Mapping[str, str],
        *,
        prefix: str = DEFAULT_PREFIX,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> Credentials:
        """Resolve every scheme from ``env``; see the module docstring for the names."""
        static: dict[str, _Inject] = {}
        oauth: dict[str, _ClientCredentials] = {}
        notes: list[str] = []
        secrets: set[str] = set()

        def get(var: str, *, secret: bool = True) -> str | None:
            value = (env.get(var) or "").strip()  # secrets mounted from files often end in a newline
            if any(c in value for c in "\r\n\0"):
                raise ConfigError(
                    f"environment variable {var} contains a line break or NUL; a credential must be one line.",
                    code="config.bad_credential",
                )
            if secret and 0 < len(value) < MIN_SUBSTRING_LENGTH:
                raise _short_secret(f"environment variable {var}", len(value), " Set the full credential.")
            return value or None

        for name, scheme in schemes.items():
            var = env_var_name(name, prefix)
            kind = _kind(scheme)
            if scheme.type == "apiKey":
                if scheme.location not in ("header", "query", "cookie") or not scheme.param_name:
                    notes.append(f"{name} ({kind}): not supported (no usable location/name)")
                elif (value := get(var)) is not None:
                    static[name] = _Inject(scheme.location, scheme.param_name, value)
                    secrets.add(value)
                    notes.append(f"{name} ({kind}): configured from {var}")
                else:
                    notes.append(f"{name} ({kind}): missing {var}")
            elif scheme.type == "http" and (scheme.scheme or "").lower() == "basic":
                user, password = get(f"{var}_USERNAME", secret=False), get(f"{var}_PASSWORD")
                source = f"{var}_USERNAME and {var}_PASSWORD"
                if (user is None or password is None) and (pair := get(var, secret=False)) and ":" in pair:
                    user, password = pair.split(":", 1)
                    source = var
                    if len(password) < MIN_SUBSTRING_LENGTH:
                        raise _short_secret(f"the password in environment variable {var}", len(password))
                if user is not None and password is not None:
                    forms = basic_auth_forms(user, password)
                    static[name] = _Inject("header", "Authorization", forms[-1])
                    secrets.update(forms)
                    notes.append(f"{name} ({kind}): configured from {source}")
                else:
                    notes.append(f"{name} ({kind}): missing {var}_USERNAME and {var}_PASSWORD (or {var} as user:pass)")
            elif scheme.type == "http" and (scheme.scheme or "").lower() != "digest":
                auth = (scheme.scheme or "bearer").lower()
                word = "Bearer" if auth == "bearer" else (scheme.scheme or "")
                if (value := get(var)) is not None:
                    static[name] = _Inject("header", "Authorization", f"{word} {value}")
                    secrets.update((value, f"{word} {value}"))
                    notes.append(f"{name} ({kind}): configured from {var}")
                else:
                    notes.append(f"{name} ({kind}): missing {var}")
            elif scheme.type in ("oauth2", "openIdConnect"):
                token_url = get(f"{var}_TOKEN_URL", secret=False) or scheme.token_url
                cid, csecret = get(f"{var}_CLIENT_ID", secret=False), get(f"{var}_CLIENT_SECRET")
                if (value := get(var)) is not None:
                    static[name] = _Inject("header", "Authorization", f"Bearer {value}")
                    secrets.update((value, f"Bearer {value}"))
                    notes.append(f"{name} ({kind}): configured from {var} (static token)")
                elif scheme.type == "oauth2" and cid and csecret and token_url:
                    oauth[name] = _ClientCredentials(name, cid, csecret, token_url, scheme.scopes)
                    secrets.update(basic_auth_forms(cid, csecret))
                    notes.append(
                        f"{name} ({kind}): client credentials from {var}_CLIENT_ID and"
                        f" {var}_CLIENT_SECRET, token URL {_origin(token_url)}"
                    )
                else:
                    wanted = [var]
                    if scheme.type == "oauth2":
                        wanted.append(f"{var}_CLIENT_ID and {var}_CLIENT_SECRET")
                        if not token_url:
                            wanted[-1] += f" with {var}_TOKEN_URL"
                    notes.append(f"{name} ({kind}): missing {' or '.join(wanted)}")
            else:
                notes.append(f"{name} ({kind}): not supported")
        return cls(static, oauth, descriptions=notes, secrets=secrets, transport=transport)

    # -- introspection ---------------------------------------------------------------

    def configured(self) -> set[str]:
        """Names of the schemes that have credentials."""
        return set(self._static) | set(self._oauth)

    def secrets(self) -> set[str]:
        """Every secret known so far (values and their derived forms) for the scrubber."""
        return set(self._secrets)

    def describe(self) -> list[str]:
        """One line per scheme: configured from which variables, or which are missing."""
        return list(self._descriptions)

    def reserved(self) -> Reserved:
        """Where the configured credentials go: ``(location, lower-case name)`` a guest may not set."""
        names = {(inject.location, inject.name.lower()) for inject in self._static.values()}
        if self._oauth:
            names.add(("header", "authorization"))
        return frozenset(names)

    # -- wiring ------------------------------------------------------------------------

    def bind(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        verify_tls: bool | None = None,
        on_secret: Callable[[str], None] | None = None,
    ) -> None:
        """Use the upstream's transport and TLS setting for token requests, and learn
        about new secrets (fetched tokens). A transport given to :meth:`from_env` wins.

        Token requests get their own client so that the upstream's static headers never
        reach the token endpoint.
        """
        if transport is not None and self._transport is None and self._client is None:
            self._transport = transport
        if verify_tls is not None:
            self._verify_tls = verify_tls
        if on_secret is not None and on_secret not in self._on_secret:
            self._on_secret.append(on_secret)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- applying ----------------------------------------------------------------------

    async def apply(self, request: UpstreamRequest) -> UpstreamRequest:
        """Inject the credentials of the first satisfiable security alternative.

        Alternatives that need no scheme (``{}`` in the spec) are only used when no
        alternative with credentials is satisfiable: configured credentials are sent.
        With nothing satisfiable the request goes out unauthenticated.
        """
        have = self.configured()
        chosen = next((alt for alt in request.security if alt and set(alt) <= have), None)
        if chosen is None:
            return request
        headers = dict(request.headers)
        params = list(request.params)
        cookies = dict(request.cookies)
        for name in chosen:
            inject = self._static.get(name) or await self._oauth_inject(self._oauth[name])
            if inject.location == "header":
                lower = inject.name.lower()
                headers = {k: v for k, v in headers.items() if k.lower() != lower}
                headers[inject.name] = inject.value
            elif inject.location == "query":
                params = [(k, v) for k, v in params if k != inject.name]
                params.append((inject.name, inject.value))
            else:
                cookies[inject.name] = inject.value
        return dataclasses.replace(request, headers=headers, params=params, cookies=cookies)

    async def _oauth_inject(self, grant: _ClientCredentials) -> _Inject:
        if not grant.fresh(self._clock()):
            async with grant.lock:  # coalesce concurrent fetches into one
                if not grant.fresh(self._clock()):
                    await self._fetch_token(grant)
        assert grant.token is not None
        return _Inject("header", "Authorization", f"Bearer {grant.token}")

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(transport=self._transport, timeout=30.0, verify=self._verify_tls)
        return self._client

    async def _fetch_token(self, grant: _ClientCredentials) -> None:
        where = f"token URL {_origin(grant.token_url)} of security scheme {grant.scheme!r}"
        form = {"grant_type": "client_credentials"}
        if grant.scopes:
            form["scope"] = " ".join(grant.scopes)
        started = self._clock()
        try:
            response = await self._http().post(
                grant.token_url,
                data=form,
                auth=(grant.client_id, grant.client_secret),
                headers={"Accept": "application/json"},
            )
        except httpx.TimeoutException as exc:
            raise UpstreamError(
                f"Fetching an OAuth2 token timed out at the {where}.",
                code="upstream.timeout",
            ) from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"Could not reach the {where} ({type(exc).__name__}).",
                code="upstream.unreachable",
            ) from exc
        payload: object = None
        try:
            payload = response.json()
        except ValueError:
            pass
        if not response.is_success or not isinstance(payload, dict):
            detail = ""
            if isinstance(payload, dict) and isinstance(payload.get("error"), str):
                detail = f", error {payload['error'][:60]!r}"
            raise UpstreamError(
                f"The {where} refused the client credentials: HTTP {response.status_code}"
                f"{detail}. Check the CLIENT_ID/CLIENT_SECRET variables of that scheme.",
                code="upstream.auth_failed",
                status=response.status_code,
            )
        token = payload.get("access_token")
        if not isinstance(token, str) or not token:
            raise UpstreamError(
                f"The {where} answered without an access_token.",
                code="upstream.auth_failed",
            )
        grant.token = token
        grant.expires_at = _expiry(started, payload.get("expires_in"))
        for form_ in (token, f"Bearer {token}"):
            self._secrets.add(form_)
            for callback in self._on_secret:
                callback(form_)

    def invalidate_tokens(self, request: UpstreamRequest) -> bool:
        """Forget the fetched tokens ``request`` could have used; True if there were any.

        Called when the upstream answers 401: the token may have been revoked before it expired.
        """
        names = {name for alternative in request.security for name in alternative if name in self._oauth}
        dropped = False
        for name in names:
            if self._oauth[name].token is not None:
                self.invalidate(name)
                dropped = True
        return dropped

    def invalidate(self, scheme: str) -> None:
        """Forget a cached token (e.g. after the upstream rejected it)."""
        grant = self._oauth.get(scheme)
        if grant is not None:
            grant.token = None
            grant.expires_at = None


def is_credential_header(name: str) -> bool:
    """``Authorization``, ``Cookie``, and names that say key, token, secret, auth, session, password..."""
    lower = name.lower()
    return lower in ("authorization", "proxy-authorization", "cookie") or any(w in lower for w in _CREDENTIAL_WORDS)


def header_secrets(headers: Mapping[str, str]) -> list[str]:
    """The secrets in static upstream headers: each value, and the token after a scheme word
    (``Bearer X`` gives ``X``), wherever they are long enough to be recognised.

    A credential header (:func:`is_credential_header`) whose value or token is too short is
    refused with :class:`ConfigError`; a short value of another header is not a secret.
    """
    found: list[str] = []
    for name, value in headers.items():
        for secret in dict.fromkeys([value, *value.split(None, 1)[1:]]):
            if len(secret) >= MIN_SUBSTRING_LENGTH:
                found.append(secret)
            elif secret and is_credential_header(name):
                raise _short_secret(f"the value of static header {name!r} (or its token)", len(secret))
    return found


def _short_secret(what: str, length: int, advice: str = "") -> ConfigError:
    return ConfigError(
        f"{what} is {length} characters long; secrets shorter than {MIN_SUBSTRING_LENGTH} characters cannot be "
        f"recognised in responses and logs, so they are refused.{advice}",
        code="config.short_secret",
    )


def seed_scrubber(credentials: Credentials | None, headers: Mapping[str, str]) -> Scrubber:
    """The one place a server's scrubber learns its secrets: credentials and static headers.

    Tokens fetched later (OAuth client credentials) are added as they arrive.
    """
    scrubber = Scrubber([*(credentials.secrets() if credentials is not None else ()), *header_secrets(headers)])
    if credentials is not None:
        credentials.bind(on_secret=scrubber.add)
    return scrubber


def guest_override(request: UpstreamRequest, reserved: Reserved, static_headers: Mapping[str, str]) -> str | None:
    """Why ``request`` (built from guest values) may not be sent, or None.

    A guest header, cookie or query parameter may not carry a name that a static header or an
    injected credential uses (names compared case-insensitively): the operator's credential
    would be replaced by the guest's, or sent beside it. A header equal to the static one is
    not an override.
    """
    statics = {name.lower(): value for name, value in static_headers.items()}
    cookie_credential = any(location == "cookie" for location, _ in reserved)
    for name, value in request.headers.items():
        lower = name.lower()
        # a whole Cookie header would replace a credential sent as a cookie (httpx sends one Cookie line)
        whole_cookie = lower == "cookie" and cookie_credential
        if (lower in statics and statics[lower] != value) or ("header", lower) in reserved or whole_cookie:
            return f"header {name!r} is set by the server (a static header or a credential); leave it out"
    for name in request.cookies:
        if ("cookie", name.lower()) in reserved or "cookie" in statics:  # a static Cookie header is whole
            return f"cookie {name!r} carries the server's credential; leave it out"
    for name, _ in request.params:
        if ("query", name.lower()) in reserved:
            return f"query parameter {name!r} carries the server's credential; leave it out"
    return None


def _expiry(started: float, expires_in: object) -> float | None:
    """Monotonic expiry time from ``expires_in`` (a number, or digits in a string)."""
    if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float, str)):
        return None
    try:
        seconds = float(expires_in)
    except ValueError:
        return None
    return started + seconds if math.isfinite(seconds) and seconds >= 0 else None


def _kind(scheme: SecurityScheme) -> str:
    if scheme.type == "apiKey":
        return f"apiKey in {scheme.location} {scheme.param_name}"
    if scheme.type == "http":
        return f"http {scheme.scheme or '?'}"
    return scheme.type


def _origin(url: str) -> str:
    """Scheme, host and path of a URL: no userinfo, no query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
