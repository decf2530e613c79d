"""``portal.toml``: the portal's settings and its servers, validated.

A bad ``[portal]`` table (or a file that is not TOML) is one error line naming the key and its
line. A bad ``[servers.<name>]`` entry fails that server alone: it is listed in ``failed`` (shown in
the banner and ``/healthz``) and the other servers still serve.

.. code-block:: toml

    [portal]
    public_url = "https://mcp.example.com"   # the issuer; every resource URL derives from it
    database_url = "postgresql+psycopg://portal@db/portal"   # default: SQLite under data_dir

    [servers.github]
    spec = "specs/github.json"               # a file, folder or URL, relative to this file
    base_url = "https://api.github.com"
    headers = { Authorization = "Bearer ${GITHUB_TOKEN}" }   # ${VAR} from the environment
    read_only = true

    [servers.kinto]
    config = "servers/kinto.toml"            # or a servers/*.toml entry (spec + settings)
    credentials = { basicAuth = "KINTO_LOGIN" }   # security scheme -> environment variable

    [servers.kinto.scopes.records]           # an extra scope kinto:records
    description = "Read and write records"
    operations = ["records.*", "* /buckets/*/collections/*/records*"]
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ._errors import PortalConfigError
from ._provider_config import OidcSettings, UpstreamOAuthEntry, is_loopback_host
from ._tomllines import KeyLines

__all__ = [
    "SERVER_NAME",
    "PortalConfig",
    "PortalSettings",
    "ScopeEntry",
    "ServerEntry",
    "is_loopback_host",
    "load_portal_config",
    "printable",
]

SERVER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
SCOPE_SUFFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,99}$")


def printable(text: str, *, limit: int = 500) -> str:
    """``text`` for a terminal or a log line: control and other non-printing characters escaped
    (``\\x1b``, ``\\n``), at most ``limit`` characters."""
    out = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return out if len(out) <= limit else out[: limit - 1] + "…"


class PortalSettings(BaseModel):
    """``[portal]``: where it listens, who it is (``public_url``), storage, lifetimes and limits."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    public_url: str = Field(
        default="", description="the issuer and base of every resource URL; default http://HOST:PORT"
    )
    host: str = Field(default="127.0.0.1", description="address to listen on")
    port: int = Field(default=8000, ge=0, le=65535)
    data_dir: str = Field(default=".codemode-portal", description="SQLite file and other state, relative to the config")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite in data_dir")
    access_token_seconds: int = Field(default=600, ge=30, le=86_400, description="access token lifetime")
    refresh_token_seconds: int = Field(default=30 * 86_400, ge=300, le=365 * 86_400, description="refresh lifetime")
    authorization_code_seconds: int = Field(default=60, ge=10, le=600, description="authorization code lifetime")
    session_seconds: int = Field(default=12 * 3600, ge=300, le=30 * 86_400, description="login session lifetime")
    allow_private_client_metadata_hosts: bool = Field(
        default=False, description="let Client ID Metadata Documents live on loopback/private addresses (tests only)"
    )
    client_metadata_max_bytes: int = Field(default=64_000, ge=1_000, le=1_000_000)
    client_metadata_timeout_seconds: float = Field(default=5.0, gt=0, le=30)
    client_metadata_cache_entries: int = Field(default=256, ge=0, le=100_000)
    client_metadata_cache_seconds: int = Field(default=300, ge=0, le=86_400)
    dynamic_registration: bool = Field(default=True, description="RFC 7591 registration at /register")
    registrations_per_ip_hour: int = Field(default=30, ge=1, le=100_000)
    max_redirect_uris: int = Field(default=10, ge=1, le=100)
    unused_client_days: int = Field(
        default=30, ge=1, le=3650, description="a registered client never authorized is deleted after this"
    )
    audit_retention_days: int = Field(default=365, ge=0, le=36_500, description="audit rows kept (0: forever)")
    login_failures_per_user: int = Field(default=5, ge=1, le=1000, description="failed logins per user per window")
    login_failures_per_ip: int = Field(default=30, ge=1, le=100_000, description="failed logins per address per window")
    login_window_seconds: int = Field(default=900, ge=10, le=86_400)
    stateless: bool = Field(default=False, description="stateless streamable HTTP (replicas behind a load balancer)")
    max_sessions_per_user: int = Field(
        default=32, ge=1, le=10_000, description="live MCP sessions and SSE streams of one user on one server"
    )
    max_sessions: int = Field(default=2000, ge=1, le=1_000_000, description="live streamable-HTTP sessions per server")
    session_idle_seconds: int = Field(default=1800, ge=10, le=86_400, description="an idle MCP session ends after this")
    sse_recheck_seconds: float = Field(
        default=15, ge=0.2, le=3600, description="an open SSE stream looks its grant up again this often"
    )
    allowed_hosts: tuple[str, ...] = Field(default=(), description="extra Host headers accepted (DNS rebinding)")
    trust_forwarded_for: bool = Field(default=False, description="take the client address from X-Forwarded-For")
    oidc: OidcSettings | None = Field(default=None, description="[portal.oidc]: sign-in through OpenID Connect")

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if not value:
            return ""
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL, e.g. https://mcp.example.com")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("must not have a query, fragment or user info")
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            raise ValueError("must be https:// unless the host is loopback (put a TLS-terminating proxy in front)")
        return value.rstrip("/")

    @property
    def issuer(self) -> str:
        if self.public_url:
            return self.public_url
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def base_path(self) -> str:
        """The path of ``public_url`` ("" or e.g. "/portal"): a proxy strips it before the portal, so
        every link and redirect the portal sends to a browser starts with it."""
        return urlsplit(self.issuer).path.rstrip("/")

    def resource_url(self, server: str, transport: Literal["mcp", "sse"] = "mcp") -> str:
        return f"{self.issuer}/{transport}/{server}"


class ScopeEntry(BaseModel):
    """``[servers.<name>.scopes.<suffix>]``: an extra scope ``<name>:<suffix>`` covering some operations."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    description: str = Field(default="", max_length=200)
    tags: tuple[str, ...] = ()
    operations: tuple[str, ...] = Field(default=(), description="keys, operationIds or 'METHOD /path', with globs")

    @model_validator(mode="after")
    def _covers_something(self) -> ScopeEntry:
        if not self.tags and not self.operations:
            raise ValueError("a scope needs tags or operations")
        return self


class ServerEntry(BaseModel):
    """``[servers.<name>]``: one API served at ``/mcp/<name>``."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    config: str | None = Field(default=None, description="a servers/*.toml file (spec + settings)")
    spec: str | None = Field(default=None, description="spec file, folder or URL")
    base_url: str | None = None
    description: str = Field(default="", max_length=300)
    headers: dict[str, str] = Field(default_factory=dict, description="static upstream headers; ${VAR} expanded")
    credentials: dict[str, str] = Field(default_factory=dict, description="security scheme -> environment variable")
    upstream_auth: Literal["shared", "per-user"] = "shared"
    upstream_scheme: str | None = Field(
        default=None, max_length=200,
        description="per-user: the security scheme a pasted credential is sent as ('bearer': on every call)",
    )  # fmt: skip
    upstream_paste: bool = Field(default=True, description="per-user: users may paste an API key or token")
    upstream_oauth: UpstreamOAuthEntry | None = Field(default=None, description="per-user: link upstream accounts")
    read_only: bool | None = None
    allow: tuple[str, ...] | None = None
    deny: tuple[str, ...] = ()
    max_calls: int | None = Field(default=None, ge=0, le=10_000)
    timeout_seconds: float | None = Field(default=None, gt=0, le=3600)
    scopes: dict[str, ScopeEntry] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self) -> ServerEntry:
        if (self.config is None) == (self.spec is None):
            raise ValueError("give exactly one of spec = '…' or config = 'servers/….toml'")
        for suffix in self.scopes:
            if not SCOPE_SUFFIX.fullmatch(suffix) or suffix in ("read", "write"):
                raise ValueError(f"scope name {suffix!r} is not allowed (letters, digits, _.:/-; not read/write)")
        if self.upstream_auth != "per-user":
            for key in ("upstream_scheme", "upstream_oauth"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key} needs upstream_auth = 'per-user'")
        elif not self.upstream_paste and self.upstream_oauth is None:
            raise ValueError("a per-user server needs upstream_paste = true or an [upstream_oauth] table")
        for var in self.credentials.values():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
                raise ValueError(f"credentials values name environment variables; {var!r} is not a variable name")
        return self


@dataclass
class PortalConfig:
    """The loaded configuration. ``failed`` maps a server name to why its entry is unusable."""

    settings: PortalSettings
    servers: dict[str, ServerEntry] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    path: Path | None = None

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path is not None else Path.cwd()

    @property
    def data_dir(self) -> Path:
        return (self.base_dir / self.settings.data_dir).resolve()

    @property
    def database_url(self) -> str:
        return self.settings.database_url or f"sqlite:///{self.data_dir / 'portal.db'}"

    def resolve(self, relative: str) -> str:
        """A path from the config, relative to the config file (URLs unchanged)."""
        if relative.startswith(("http://", "https://")):
            return relative
        return str((self.base_dir / relative).expanduser().resolve())


def _problem(exc: ValidationError, where: str, prefix: tuple[str, ...], lines: KeyLines) -> str:
    first = exc.errors()[0]
    loc = (*prefix, *(str(p) for p in first["loc"]))
    line = lines.line_of(loc)
    at = f"{where}:{line}" if line else where
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    msg = str(first["msg"]).removeprefix("Value error, ")
    return f"{at}: {'.'.join(loc)}: {msg}{more}"


def load_portal_config(
    path: Path | None,
    *,
    overrides: Mapping[str, Any] | None = None,
    text: str | None = None,
) -> PortalConfig:
    """Read and validate ``path`` (or ``text``). ``overrides`` (host, port, public_url…) win over the file."""
    where = str(path) if path is not None else "portal.toml"
    if text is None:
        if path is None:
            raise PortalConfigError("no portal.toml given (use --config FILE).", code="portal.config.missing")
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PortalConfigError(f"{where}: file not found.", code="portal.config.not_found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise PortalConfigError(f"{where}: cannot read: {exc}.", code="portal.config.unreadable") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PortalConfigError(f"{where}: not valid TOML: {exc}.", code="portal.config.parse") from None
    lines = KeyLines(text)
    unknown = sorted(set(data) - {"portal", "servers"})
    if unknown:
        line = lines.line_of((unknown[0],))
        raise PortalConfigError(
            f"{where}:{line or '?'}: {unknown[0]}: unknown table (expected [portal] and [servers.<name>]).",
            code="portal.config.invalid",
        )
    raw_portal = data.get("portal", {})
    if not isinstance(raw_portal, dict):
        raise PortalConfigError(f"{where}: portal: must be a table.", code="portal.config.invalid")
    raw_portal = {**raw_portal, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    try:
        settings = PortalSettings.model_validate(raw_portal)
    except ValidationError as exc:
        raise PortalConfigError(_problem(exc, where, ("portal",), lines), code="portal.config.invalid") from None
    config = PortalConfig(settings=settings, path=path.resolve() if path is not None else None)
    raw_servers = data.get("servers", {})
    if not isinstance(raw_servers, dict):
        raise PortalConfigError(f"{where}: servers: must be tables [servers.<name>].", code="portal.config.invalid")
    for name, raw in raw_servers.items():
        line = lines.line_of(("servers", name))
        if not SERVER_NAME.fullmatch(name):
            # shown in the banner, /healthz and the index page: escaped, so a name cannot write to the terminal
            shown = printable(name, limit=64)
            config.failed[shown] = (
                f"{where}:{line or '?'}: servers.{shown}: a server name is 1-63 lower-case letters, digits, _ or -"
            )
            continue
        if not isinstance(raw, dict):
            config.failed[name] = f"{where}:{line or '?'}: servers.{name}: must be a table"
            continue
        try:
            config.servers[name] = ServerEntry.model_validate(raw)
        except ValidationError as exc:
            config.failed[name] = _problem(exc, where, ("servers", name), lines)
    return config
