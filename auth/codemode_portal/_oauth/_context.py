"""What the authorization server knows: settings, the (synchronous) store, the audit log, the
client directory (registered clients and metadata documents) and the servers it issues tokens for."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from authlib.oauth2.rfc6749.errors import InvalidScopeError

from .._audit import AuditLog
from .._config import PortalSettings
from .._errors import InvalidTargetError
from .._scopes import ServerScopes, parse_scope, scope_token_ok
from .._store import Client, Store
from ._cimd import MetadataFetcher, is_metadata_url

__all__ = ["OAuthContext", "Target"]


@dataclass(frozen=True)
class Target:
    """The resolved target of an authorization request."""

    server: str
    resource: str
    scopes: tuple[str, ...]


@dataclass
class OAuthContext:
    settings: PortalSettings
    store: Store
    audit: AuditLog
    servers: Mapping[str, ServerScopes]  # the servers that run (a failed server cannot be authorized)
    fetcher: MetadataFetcher = field(init=False)
    clock: object = time.time

    def __post_init__(self) -> None:
        self.fetcher = MetadataFetcher(self.settings)

    def now(self) -> float:
        return float(self.clock())  # type: ignore[operator]

    @property
    def issuer(self) -> str:
        return self.settings.issuer

    def resources(self, server: str) -> tuple[str, str]:
        return self.settings.resource_url(server, "mcp"), self.settings.resource_url(server, "sse")

    def server_for_resource(self, resource: str) -> str | None:
        for name in self.servers:
            if resource in self.resources(name):
                return name
        return None

    def scopes_supported(self) -> list[str]:
        return [s for scopes in self.servers.values() for s in scopes.supported]

    # -- clients --------------------------------------------------------------------------
    def find_client(self, client_id: str, *, fresh: bool) -> Client | None:
        """A registered client, or a metadata-document client (fetched when ``fresh``, else the last
        good copy may serve, so a token refresh does not depend on the document host being up)."""
        if not client_id or len(client_id) > 2000:
            return None
        if not is_metadata_url(client_id, self.settings):
            found = self.store.find_client(client_id)
            return found if found is not None and found.kind == "dcr" else None
        if not fresh:
            stored = self.store.find_client(client_id)
            if stored is not None and stored.kind == "cimd":
                return stored
        client = self.fetcher.get(client_id)  # MetadataProblem propagates
        self.store.save_client(client)
        return client

    # -- authorization targets ------------------------------------------------------------
    def resolve_target(self, resources: list[str], scope_param: str | None) -> Target:
        """RFC 8707: exactly one resource, given or inferred from scopes naming one server."""
        scopes = parse_scope(scope_param)
        bad = [s for s in scopes if not scope_token_ok(s)]
        if bad:
            raise InvalidScopeError("A requested scope is not a valid scope token.")
        if len(resources) > 1:
            raise InvalidTargetError("Ask for one resource at a time: each token is bound to one server.")
        if resources:
            resource = resources[0]
            server = self.server_for_resource(resource)
            if server is None:
                raise InvalidTargetError("The resource is not a server of this portal.")
        else:
            named = {s.split(":", 1)[0] for s in scopes if ":" in s}
            if len(named) != 1 or next(iter(named)) not in self.servers:
                raise InvalidTargetError(
                    "Name the server with the resource parameter (RFC 8707), e.g. resource="
                    f"{self.settings.resource_url(next(iter(self.servers), 'NAME'))}."
                )
            server = next(iter(named))
            resource = self.resources(server)[0]
        catalogue = self.servers[server]
        unknown = catalogue.unknown(scopes)
        if unknown:
            raise InvalidScopeError(f"Unknown scope for server {server}: {' '.join(unknown)[:300]}.")
        if not scopes:
            scopes = (catalogue.read, catalogue.write)
        return Target(server, resource, scopes)
