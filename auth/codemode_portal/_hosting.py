"""One :class:`~codemode._server.CodemodeServer` per configured server, mounted under
``/mcp/<name>`` and ``/sse/<name>``. A server whose entry, credentials or spec is bad fails alone:
it is reported (banner, ``/healthz``, index page) and the others serve.

Upstream credentials stay host-side, as in the engine: a server's shared credentials come from
the environment variables its entry names. Per-user credentials plug in through
:class:`CredentialResolver` (``credentials_for(user_id, server)``), asked on every request.
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mcp.server.transport_security import TransportSecuritySettings

from codemode import Caller, CodemodeError, CredentialSource, Operation, UpstreamError, load_spec
from codemode._admission import ExecutionLimiter
from codemode._asgi import MountedServer, mount_http, mount_sse
from codemode._config import expand_env, load_server_config
from codemode._credentials import env_var_name
from codemode._sandbox import Sandbox, WasmSandbox
from codemode._server import CodemodeServer
from codemode._settings import ServerSettings
from codemode._upstream_types import UpstreamRequest

from ._audit import AuditLog
from ._config import PortalConfig, ServerEntry
from ._scopes import ServerScopes

__all__ = [
    "CURRENT_CALLER",
    "CredentialResolver",
    "HostedServer",
    "MissingCredential",
    "SharedCredentials",
    "build_servers",
    "transport_security_for",
]

log = logging.getLogger("codemode.portal.hosting")

CURRENT_CALLER: contextvars.ContextVar[tuple[str, Caller] | None] = contextvars.ContextVar(
    "portal_caller", default=None
)
"""(server name, caller) of the MCP request being served; set by the resource middleware."""

CREDENTIAL_SUFFIXES = {"client_id": "_CLIENT_ID", "client_secret": "_CLIENT_SECRET", "token_url": "_TOKEN_URL",
                       "username": "_USERNAME", "password": "_PASSWORD"}  # fmt: skip


class CredentialResolver(Protocol):
    """Where a per-user server's upstream credential comes from (the seam for per-user credentials)."""

    async def credentials_for(self, user_id: str, server: str) -> CredentialSource | None:
        """The user's own credential source, or None when the user has none."""
        ...


class SharedCredentials:
    """The default resolver: nobody has a per-user credential yet."""

    async def credentials_for(self, user_id: str, server: str) -> CredentialSource | None:
        return None


class MissingCredential:
    """Used for a per-user server when the user has no credential: every call fails with a
    catchable ``ApiError`` in the guest that says where to add one. Never falls back to shared ones."""

    def __init__(self, server: str, url: str) -> None:
        self.message = f"server {server} uses each user's own upstream credential and you have none; add it at {url}"

    async def apply(self, request: UpstreamRequest) -> UpstreamRequest:
        raise UpstreamError(self.message, code="upstream.no_user_credential", status=None)

    def invalidate_tokens(self, request: UpstreamRequest) -> bool:
        return False

    def secrets(self) -> Iterable[str]:
        return ()

    def reserved(self) -> frozenset[tuple[str, str]]:
        return frozenset()  # every call fails before anything is sent


@dataclass
class HostedServer:
    name: str
    entry: ServerEntry | None
    title: str = ""
    server: CodemodeServer | None = None
    scopes: ServerScopes | None = None
    http: MountedServer | None = None
    sse: MountedServer | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None and self.server is not None

    @property
    def per_user(self) -> bool:
        return self.entry is not None and self.entry.upstream_auth == "per-user"


def transport_security_for(issuer_netloc: str, issuer_origin: str, extra: Iterable[str]) -> TransportSecuritySettings:
    """DNS-rebinding protection: the public host, loopback, and any host named in ``allowed_hosts``."""
    extra = tuple(extra)
    hosts = [issuer_netloc, "127.0.0.1:*", "localhost:*", "[::1]:*", *extra]
    origins = [issuer_origin, "http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    origins += [f"https://{h}" for h in extra] + [f"http://{h}" for h in extra]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=list(dict.fromkeys(hosts)),
        allowed_origins=list(dict.fromkeys(origins)),
    )


def _access_for(name: str) -> Callable[[], Caller | None]:
    def access() -> Caller | None:
        current = CURRENT_CALLER.get()
        if current is None:
            return None
        server, caller = current
        if server != name:  # never happens through the middleware; refuse everything if it ever did
            return Caller(subject=caller.subject, client_id=caller.client_id, denial=_deny_all)
        return caller

    return access


def _deny_all(_op: Operation) -> str:
    return "this token is for another server"


def _settings(
    config: PortalConfig, name: str, entry: ServerEntry, env: Mapping[str, str]
) -> tuple[str, ServerSettings]:
    """(spec source, settings) of one entry: a servers/*.toml file or an inline spec, then the entry's overrides."""
    if entry.config is not None:
        source, settings = load_server_config(Path(config.resolve(entry.config)), env)
    else:
        assert entry.spec is not None
        source, settings = config.resolve(entry.spec), ServerSettings()
    ex = settings.execute
    limits = ex.limits if entry.timeout_seconds is None else ex.limits.model_copy(
        update={"timeout_seconds": entry.timeout_seconds})  # fmt: skip
    execute = ex.model_copy(update={
        "limits": limits, "read_only": ex.read_only or bool(entry.read_only),
        "allow": entry.allow if entry.allow is not None else ex.allow, "deny": (*ex.deny, *entry.deny),
        "max_calls": ex.max_calls if entry.max_calls is None else entry.max_calls,
    })  # fmt: skip
    headers = {**settings.upstream.headers,
               **{k: expand_env(v, env, f"servers.{name}.headers.{k}") for k, v in entry.headers.items()}}  # fmt: skip
    upstream = settings.upstream.model_copy(update={"base_url": entry.base_url or settings.upstream.base_url,
                                                    "headers": headers})  # fmt: skip
    merged = settings.model_copy(update={"name": name, "execute": execute, "upstream": upstream})
    return source, ServerSettings.model_validate(merged.model_dump())


def _credential_env(name: str, entry: ServerEntry, env: Mapping[str, str], prefix: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, var in entry.credentials.items():
        scheme, _, part = key.partition(".")
        if part and part not in CREDENTIAL_SUFFIXES:
            known = ", ".join(CREDENTIAL_SUFFIXES)
            raise CodemodeError(f"servers.{name}.credentials.{key}: unknown part {part!r} (use one of {known})",
                                code="portal.config.credentials")  # fmt: skip
        if var not in env:
            raise CodemodeError(f"servers.{name}.credentials.{key}: environment variable {var} is not set",
                                code="portal.config.missing_env")  # fmt: skip
        out[env_var_name(scheme, prefix) + CREDENTIAL_SUFFIXES.get(part, "")] = env[var]
    return out


def build_servers(
    config: PortalConfig,
    *,
    audit: AuditLog,
    sandbox: Sandbox | None = None,
    env: Mapping[str, str] | None = None,
    limiter: ExecutionLimiter | None = None,
) -> dict[str, HostedServer]:
    """Every configured server, each built or failed on its own. Slow (loads specs): call it at start-up.

    Every server shares one sandbox and one execution limiter: the limit on concurrent executions,
    the memory budget and each client's fair share hold for the whole portal, not per API.
    """
    env = os.environ if env is None else env
    settings = config.settings
    issuer = settings.issuer
    from urllib.parse import urlsplit

    parts = urlsplit(issuer)
    security = transport_security_for(parts.netloc, f"{parts.scheme}://{parts.netloc}", settings.allowed_hosts)
    shared_sandbox = sandbox or WasmSandbox()
    shared_limiter = limiter or ExecutionLimiter()
    hosted: dict[str, HostedServer] = {
        name: HostedServer(name, None, problem=problem) for name, problem in config.failed.items()
    }
    for name, entry in config.servers.items():
        item = HostedServer(name, entry, title=name)
        hosted[name] = item
        try:
            source, server_settings = _settings(config, name, entry, env)
            cred_env = _credential_env(name, entry, env, server_settings.env_prefix)
            spec = load_spec(source)
            unknown = {k.partition(".")[0] for k in entry.credentials} - set(spec.security_schemes)
            if unknown:
                raise CodemodeError(f"servers.{name}.credentials: the spec has no security scheme "
                                    f"{sorted(unknown)[0]!r} (it has {', '.join(spec.security_schemes) or 'none'})",
                                    code="portal.config.credentials")  # fmt: skip
            server = CodemodeServer(spec, server_settings, sandbox=shared_sandbox, env=cred_env,
                                    audit_hooks=(audit.hook_for(name),), access=_access_for(name),
                                    limiter=shared_limiter)  # fmt: skip
        except CodemodeError as exc:
            item.problem = exc.message
            log.warning("server %s is not served: %s", name, exc.message)
            continue
        except OSError as exc:
            item.problem = f"{type(exc).__name__}: {exc}"
            log.warning("server %s is not served: %s", name, item.problem)
            continue
        item.server, item.title = server, spec.title
        item.scopes = ServerScopes(name, spec, entry.scopes)
        item.http = mount_http(
            server, stateless=settings.stateless, security=security, max_sessions=settings.max_sessions,
            session_idle_seconds=settings.session_idle_seconds,
        )  # fmt: skip
        item.sse = mount_sse(server, message_path=f"/sse/{name}/messages/", security=security)
    return dict(sorted(hosted.items()))
