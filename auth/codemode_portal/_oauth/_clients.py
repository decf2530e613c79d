"""OAuth clients: metadata validation (shared by RFC 7591 registration and Client ID Metadata
Documents), the redirect-URI rule, and the authlib client model over a stored :class:`Client`."""

from __future__ import annotations

import ipaddress
import json
import re
import time
import unicodedata
from typing import Any, Literal
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import ClientMixin
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .._config import is_loopback_host
from .._crypto import same, token_hash
from .._store import Client

__all__ = [
    "AUTH_METHODS",
    "GRANT_TYPES",
    "METADATA_TEXTS",
    "ClientMetadata",
    "MetadataProblem",
    "OAuthClient",
    "redirect_uri_problem",
    "validate_metadata",
]

HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"})
AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post")
GRANT_TYPES = ("authorization_code", "refresh_token")
MAX_URI = 2000
_URI_CHARS = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+$")  # RFC 3986 characters only
_HOST = re.compile(
    r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)


# pydantic's error types in plain words (its own messages name Python types: "a valid dictionary").
METADATA_TEXTS: dict[str, str] = {
    "missing": "is required",
    "list_type": "must be a JSON array",
    "string_type": "must be a string",
    "too_short": "must not be empty",
    "string_too_long": "is too long (at most {max_length} characters)",
    "too_long": "has too many entries",
    "literal_error": "must be {expected}",
}


class MetadataProblem(ValueError):
    """Client metadata that cannot be used; ``field`` names what is wrong."""

    def __init__(self, message: str, *, field: str = "client_metadata") -> None:
        super().__init__(message)
        self.field = field


def redirect_uri_problem(uri: object) -> str | None:
    """Why ``uri`` cannot be a redirect URI, or None. Only https, or http on a loopback host."""
    if not isinstance(uri, str) or not uri:
        return "a redirect URI must be a non-empty string"
    if len(uri) > MAX_URI or not _URI_CHARS.fullmatch(uri):
        return "a redirect URI must be at most 2000 characters of RFC 3986 (percent-encode anything else)"
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return f"{uri[:200]!r} is not a valid URL"
    del port
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return f"{uri[:200]!r} must be an https:// URL or an http:// loopback URL"
    if "[" not in parts.netloc and not _HOST.fullmatch(parts.hostname):
        return f"{uri[:200]!r} does not name a valid host"
    if parts.fragment or "#" in uri:
        return f"{uri[:200]!r} must not have a fragment"
    if parts.username is not None or parts.password is not None:
        return f"{uri[:200]!r} must not carry user info"
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        return f"{uri[:200]!r}: http:// is only allowed for 127.0.0.1, [::1] or localhost; use https://"
    if parts.port == 0:
        return f"{uri[:200]!r} does not name a usable port"
    if parts.scheme == "https":
        try:
            ip = ipaddress.ip_address(parts.hostname)
        except ValueError:
            return None
        if ip.is_unspecified or ip.is_multicast:
            return f"{uri[:200]!r} does not name a usable host"
    return None


class ClientMetadata(BaseModel):
    """The client metadata the portal understands (RFC 7591 §2); other fields are ignored."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    redirect_uris: list[str] = Field(min_length=1)
    token_endpoint_auth_method: Literal["none", "client_secret_basic", "client_secret_post"] = "client_secret_basic"  # noqa: S105 - RFC 7591's default method, not a secret
    grant_types: list[Literal["authorization_code", "refresh_token"]] = ["authorization_code"]
    response_types: list[Literal["code"]] = ["code"]
    client_name: str | None = Field(default=None, max_length=200)
    client_uri: str | None = Field(default=None, max_length=MAX_URI)
    scope: str | None = Field(default=None, max_length=4000)
    software_id: str | None = Field(default=None, max_length=200)
    software_version: str | None = Field(default=None, max_length=100)

    @field_validator("redirect_uris", mode="before")
    @classmethod
    def _redirects(cls, value: object) -> object:
        """Checked as sent (before whitespace stripping): a URI is matched exactly later, so one
        with stray spaces is refused rather than silently changed."""
        if isinstance(value, list):
            for uri in value:
                problem = redirect_uri_problem(uri)
                if problem:
                    raise ValueError(problem)
            return list(dict.fromkeys(value))
        return value

    @field_validator("client_uri")
    @classmethod
    def _client_uri(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("https", "http"):
            raise ValueError("client_uri must be an http(s) URL")
        return value

    @field_validator("client_name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        # The consent page shows the name: control characters, and invisible format characters that
        # reorder or hide text (right-to-left overrides, zero-width characters), could disguise it.
        if value is not None and any(unicodedata.category(c) in HIDDEN_CATEGORIES for c in value):
            raise ValueError("client_name must not contain control, format or other invisible characters")
        return value or None


def validate_metadata(data: object, *, max_redirect_uris: int) -> ClientMetadata:
    """Validated metadata, or ``MetadataProblem`` naming the field (never a stack trace)."""
    if not isinstance(data, dict):
        raise MetadataProblem("client metadata must be a JSON object")
    try:
        meta = ClientMetadata.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first["loc"]
        where = " ".join(f"item {p + 1}" if isinstance(p, int) else str(p) for p in loc) or "client_metadata"
        plain = METADATA_TEXTS.get(first["type"])
        if plain is not None:
            problem = f"{where} {plain.format(**first.get('ctx', {}))}"
        else:  # the portal's own validators: their message names the problem
            problem = f"{where}: {str(first['msg']).removeprefix('Value error, ')}"
        field = "redirect_uris" if where.startswith("redirect_uris") else where
        raise MetadataProblem(problem, field=field) from None
    if len(meta.redirect_uris) > max_redirect_uris:
        raise MetadataProblem(f"redirect_uris: at most {max_redirect_uris} are allowed", field="redirect_uris")
    if "refresh_token" in meta.grant_types and "authorization_code" not in meta.grant_types:
        raise MetadataProblem("grant_types: refresh_token needs authorization_code", field="grant_types")
    return meta


def client_from_metadata(
    client_id: str, meta: ClientMetadata, *, kind: Literal["dcr", "cimd"], secret_hash: str | None = None
) -> Client:
    shown: dict[str, Any] = meta.model_dump(exclude_none=True)
    return Client(
        client_id=client_id, name=meta.client_name or client_id[:200], redirect_uris=tuple(meta.redirect_uris),
        auth_method=meta.token_endpoint_auth_method, kind=kind, created_at=time.time(), secret_hash=secret_hash,
        grant_types=tuple(dict.fromkeys(meta.grant_types)), client_uri=meta.client_uri,
        metadata_json=json.dumps(shown, sort_keys=True),
    )  # fmt: skip


class OAuthClient(ClientMixin):  # type: ignore[misc]
    """authlib's view of a stored client. Redirect URIs match exactly; auth method is the registered one."""

    def __init__(self, record: Client) -> None:
        self.record = record

    def get_client_id(self) -> str:
        return self.record.client_id

    def get_default_redirect_uri(self) -> str | None:
        uris = self.record.redirect_uris
        return uris[0] if len(uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str:
        return scope or ""

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.record.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        stored = self.record.secret_hash
        return stored is not None and same(token_hash(client_secret), stored)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.record.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.record.grant_types
