"""Config of the external OAuth providers the portal is a *client* of, validated:

* ``[servers.<name>.upstream_oauth]``: how each user links their own upstream account
  (``upstream_auth = "per-user"``) through the API's OAuth 2 authorization-code flow;
* ``[portal.oidc]``: sign-in delegated to an OpenID Connect provider.

.. code-block:: toml

    [servers.notes]
    spec = "https://notes.example.com/openapi.json"
    upstream_auth = "per-user"          # each portal user brings their own credential
    # upstream_scheme = "oauth2"        # which security scheme a pasted key is sent as (default: all usable)
    # upstream_paste = true             # allow pasting an API key or token on the portal page

    [servers.notes.upstream_oauth]      # link accounts through the spec's authorizationCode flow
    client_id = "codemode-portal"       # registered at the API's OAuth server with the redirect URI
                                        #   <public_url>/upstream/notes/callback
    client_secret = "NOTES_CLIENT_SECRET"   # the name of an environment variable (omit: public client)
    # scopes = ["notes:read"]           # default: every scope the flow declares
    # authorization_url / token_url / revocation_url   override the spec (revocation: discovered)

    [portal.oidc]
    issuer = "https://accounts.example.com"
    client_id = "codemode-portal"       # redirect URI: <public_url>/login/oidc/callback
    client_secret = "OIDC_CLIENT_SECRET"
    create_users = false                # true: a first sign-in creates the portal user
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["ENV_VAR", "LOOPBACK_NAMES", "OidcSettings", "UpstreamOAuthEntry", "check_provider_url", "is_loopback_host"]

ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SCOPE = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]{1,200}$")  # RFC 6749 §3.3 scope-token
AuthMethod = Literal["client_secret_basic", "client_secret_post", "none"]


LOOPBACK_NAMES = ("localhost",)


def is_loopback_host(host: str | None) -> bool:
    """``localhost`` or a loopback address (either IP version, bracketed or not)."""
    if not host:
        return False
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_provider_url(value: str) -> str:
    """An absolute https URL (http only on loopback), without user info or fragment."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute https:// URL")
    if parts.username or parts.password or parts.fragment:
        raise ValueError("must not have user info or a fragment")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError("must be https:// (http:// only for a loopback host)")
    return value


def _url_or_none(value: str | None) -> str | None:
    return None if value is None else check_provider_url(value)


def _env_name(value: str | None) -> str | None:
    if value is not None and not ENV_VAR.fullmatch(value):
        raise ValueError(f"names an environment variable (never the secret itself); {value!r} is not one")
    return value


def _scopes(value: tuple[str, ...] | None) -> tuple[str, ...] | None:
    for s in value or ():
        if not SCOPE.fullmatch(s):
            raise ValueError(f"{s!r} is not an OAuth scope")
    return value


class UpstreamOAuthEntry(BaseModel):
    """``[servers.<name>.upstream_oauth]``: the portal's client registration at the API's OAuth server."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    client_id: str = Field(min_length=1, max_length=500)
    client_secret: str | None = Field(default=None, description="environment variable holding the client secret")
    scheme: str | None = Field(default=None, description="the oauth2 security scheme (default: the first with an "
                                                         "authorizationCode flow)")  # fmt: skip
    scopes: tuple[str, ...] | None = Field(default=None, description="default: every scope of the flow")
    authorization_url: str | None = None
    token_url: str | None = None
    revocation_url: str | None = Field(default=None, description="RFC 7009; default: from the server's metadata")
    token_endpoint_auth_method: AuthMethod | None = None
    authorize_params: dict[str, str] = Field(default_factory=dict, description="extra authorization parameters")

    @field_validator("client_secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        return _env_name(value)

    @field_validator("authorization_url", "token_url", "revocation_url")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        return _url_or_none(value)

    @field_validator("scopes")
    @classmethod
    def _scope_check(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return _scopes(value)

    @field_validator("authorize_params")
    @classmethod
    def _params(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = {"response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge",
                    "code_challenge_method", "nonce"}  # fmt: skip
        taken = sorted(reserved & set(value))
        if taken:
            raise ValueError(f"{taken[0]} is set by the portal itself")
        return value

    @model_validator(mode="after")
    def _auth_method(self) -> UpstreamOAuthEntry:
        if self.token_endpoint_auth_method in ("client_secret_basic", "client_secret_post") and not self.client_secret:
            raise ValueError(f"token_endpoint_auth_method {self.token_endpoint_auth_method} needs client_secret")
        return self

    @property
    def auth_method(self) -> AuthMethod:
        if self.token_endpoint_auth_method is not None:
            return self.token_endpoint_auth_method
        return "client_secret_basic" if self.client_secret else "none"


class OidcSettings(BaseModel):
    """``[portal.oidc]``: sign-in through an external OpenID Connect provider."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    issuer: str = Field(description="the provider's issuer; discovery at <issuer>/.well-known/openid-configuration")
    client_id: str = Field(min_length=1, max_length=500)
    client_secret: str | None = Field(default=None, description="environment variable holding the client secret")
    label: str = Field(default="", max_length=80, description="the button's text (default: Sign in with <host>)")
    scopes: tuple[str, ...] = ("openid", "profile", "email")
    create_users: bool = Field(default=False, description="a first sign-in creates the portal user; false: only "
                                                          "users mapped beforehand may sign in")  # fmt: skip
    allowed_email_domains: tuple[str, ...] = Field(
        default=(), description="with create_users: only people whose verified e-mail is in one of these domains "
        "get an account (a multi-tenant provider would otherwise let anyone in)",
    )  # fmt: skip
    username_claim: str = Field(default="preferred_username", min_length=1, max_length=100)
    token_endpoint_auth_method: AuthMethod | None = None
    leeway_seconds: int = Field(default=60, ge=0, le=600, description="clock skew allowed on exp/iat")

    @field_validator("client_secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        return _env_name(value)

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        check_provider_url(value)
        if urlsplit(value).query:
            raise ValueError("an issuer has no query")
        return value  # kept exactly: the provider's metadata and ID tokens must name this very string

    @field_validator("allowed_email_domains")
    @classmethod
    def _domains(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for d in value:
            if not re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+", d):
                raise ValueError(f"{d!r} is not a lower-case domain name like example.com")
        return value

    @field_validator("scopes")
    @classmethod
    def _openid(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        _scopes(value)
        if "openid" not in value:
            raise ValueError("must include openid")
        return value

    @property
    def auth_method(self) -> AuthMethod:
        if self.token_endpoint_auth_method is not None:
            return self.token_endpoint_auth_method
        return "client_secret_basic" if self.client_secret else "none"

    @property
    def button_label(self) -> str:
        return self.label or f"Sign in with {urlsplit(self.issuer).hostname}"
