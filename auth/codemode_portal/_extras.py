"""Wiring of the optional parts into ``build_portal``: each user's own upstream credentials (for
servers with ``upstream_auth = "per-user"``) and sign-in through OpenID Connect (``[portal.oidc]``).

``build_extras`` runs right after the servers are built: a per-user server whose plan is unusable
is marked failed (it alone), the credential key is loaded (the portal refuses to start when it is
malformed), and the resolver, login method, navigation link and routes are handed to the core.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from starlette.routing import BaseRoute

from codemode import CodemodeError

from ._audit import AuditLog
from ._box import ENV_KEYS, SecretBox, load_box
from ._config import PortalConfig
from ._errors import PortalConfigError
from ._hosting import HostedServer
from ._oidc import OidcLogin
from ._oidc_pages import oidc_routes
from ._store import AsyncStore
from ._upstream_accounts import UpstreamAccounts
from ._upstream_pages import PAGE, upstream_routes
from ._upstream_plan import PerUserPlan, plan_for
from ._upstream_sources import UserCredentials
from ._web import LoginMethod, NavItem, Web

__all__ = ["PortalExtras", "build_extras"]

log = logging.getLogger("codemode.portal")


@dataclass
class PortalExtras:
    box: SecretBox | None = None
    plans: dict[str, PerUserPlan] = field(default_factory=dict)
    resolver: UserCredentials | None = None
    accounts: UpstreamAccounts | None = None
    oidc: OidcLogin | None = None
    warnings: list[str] = field(default_factory=list)

    def login_methods(self) -> list[LoginMethod]:
        return [self.oidc] if self.oidc is not None else []

    def nav(self) -> list[NavItem]:
        return [NavItem(PAGE, "API credentials")] if self.accounts is not None else []

    def routes(self, web: Web) -> list[BaseRoute]:
        out: list[BaseRoute] = []
        if self.accounts is not None:
            out += upstream_routes(web, self.accounts)
        if self.oidc is not None:
            out += oidc_routes(web, self.oidc)
        return out


def build_extras(
    config: PortalConfig,
    hosted: Mapping[str, HostedServer],
    astore: AsyncStore,
    audit: AuditLog,
    env: Mapping[str, str],
) -> PortalExtras:
    settings = config.settings
    per_user = {n: h for n, h in hosted.items() if h.ok and h.per_user and h.server is not None}
    extras = PortalExtras()
    if per_user or settings.oidc is not None:
        extras.box = load_box(config.data_dir, env)
    elif ENV_KEYS in env:
        load_box(config.data_dir, env, create=False)  # unused now, but a malformed key is still refused
    for name, h in per_user.items():
        assert h.entry is not None and h.server is not None
        try:
            extras.plans[name] = plan_for(name, h.entry, h.server.spec, env)
        except CodemodeError as exc:
            h.problem = exc.message
            log.warning("server %s is not served: %s", name, exc.message)
    issuer = settings.issuer
    box = extras.box
    if box is not None:
        stale = [c for c in astore.store.list_upstream_credentials() if box.key_of(c.secret) not in box.key_ids]
        if stale:
            extras.warnings.append(
                f"{len(stale)} stored credential(s) are sealed under a key this portal does not have "
                f"(keys from {box.source}): their users must add them again, or give the old key back "
                "(docs/portal-credentials.md, rotating the key)."
            )
            log.warning("%s", extras.warnings[-1])
    if extras.plans and extras.box is not None:
        extras.resolver = UserCredentials(astore, extras.box, extras.plans, audit,
                                          page_url=lambda server: f"{issuer}{PAGE}#server-{server}")  # fmt: skip
        extras.accounts = UpstreamAccounts(astore, extras.box, extras.plans, audit, issuer=issuer)
    oidc = settings.oidc
    if oidc is not None and extras.box is not None:
        secret = None
        if oidc.client_secret is not None:
            secret = (env.get(oidc.client_secret) or "").strip()
            if not secret:
                raise PortalConfigError(f"portal.oidc.client_secret: environment variable {oidc.client_secret} is "
                                        "not set.", code="portal.config.missing_env")  # fmt: skip
        extras.oidc = OidcLogin(oidc, astore, extras.box, audit, portal_issuer=issuer, client_secret=secret)
    return extras
