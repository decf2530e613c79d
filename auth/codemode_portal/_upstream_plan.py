"""What a per-user server accepts from each user, derived once at start-up from the spec's IR and
the server's config: which credentials may be pasted (one option per usable security scheme),
and whether accounts can be linked through an OAuth authorization-code flow (and where).

A problem (an unknown scheme, a missing client-secret variable, a flow with relative URLs…)
fails that server alone, with a message naming the config key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from codemode import ApiSpec, CodemodeError, SecurityScheme

from ._config import ServerEntry
from ._oauthclient import ClientRegistration
from ._provider_config import check_provider_url

__all__ = ["BEARER", "LinkOption", "PasteOption", "PerUserPlan", "plan_for"]

BEARER = "bearer"
"""A pseudo scheme: ``Authorization: Bearer <credential>`` on every call, for specs that declare none."""


@dataclass(frozen=True)
class PasteOption:
    """A kind of credential a user may paste: sent as security scheme ``scheme``."""

    scheme: str
    label: str
    hint: str
    basic: bool = False  # ``user:password``


@dataclass(frozen=True)
class LinkOption:
    """Linking an upstream account: the OAuth endpoints, the scopes and the portal's registration."""

    scheme: str  # the scheme the access token is sent as (BEARER: on every call)
    authorization_url: str
    token_url: str
    refresh_url: str
    revocation_url: str | None
    scopes: tuple[str, ...]
    scope_descriptions: Mapping[str, str]
    registration: ClientRegistration
    authorize_params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PerUserPlan:
    server: str
    title: str
    paste: tuple[PasteOption, ...]
    link: LinkOption | None
    schemes: Mapping[str, SecurityScheme]

    def paste_option(self, scheme: str) -> PasteOption | None:
        return next((p for p in self.paste if p.scheme == scheme), None)


def _fail(name: str, key: str, message: str) -> CodemodeError:
    return CodemodeError(f"servers.{name}.{key}: {message}", code="portal.config.per_user")


def _paste_option(scheme: SecurityScheme) -> PasteOption | None:
    if scheme.type == "apiKey" and scheme.location in ("header", "query", "cookie") and scheme.param_name:
        return PasteOption(scheme.name, f"API key (sent in the {scheme.location} {scheme.param_name})", "the key")
    if scheme.type == "http":
        kind = (scheme.scheme or "bearer").lower()
        if kind == "basic":
            return PasteOption(scheme.name, "User name and password (HTTP Basic)", "user:password", basic=True)
        if kind == "bearer":
            return PasteOption(scheme.name, "Bearer token", "the token")
        if kind != "digest":
            return PasteOption(scheme.name, f"{scheme.scheme} credential", "the credential")
        return None
    if scheme.type in ("oauth2", "openIdConnect"):
        return PasteOption(scheme.name, "OAuth access token (pasted tokens are not renewed)", "the access token")
    return None


def _paste_options(name: str, entry: ServerEntry, spec: ApiSpec) -> tuple[PasteOption, ...]:
    if not entry.upstream_paste:
        return ()
    schemes = spec.security_schemes
    wanted = entry.upstream_scheme
    if wanted is not None:
        if wanted == BEARER and BEARER not in schemes:
            return (PasteOption(BEARER, "Bearer token (sent on every call)", "the token"),)
        if wanted not in schemes:
            raise _fail(name, "upstream_scheme", f"the spec has no security scheme {wanted!r} "
                        f"(it has {', '.join(schemes) or 'none'}; 'bearer' sends a token on every call)")  # fmt: skip
        option = _paste_option(schemes[wanted])
        if option is None:
            raise _fail(name, "upstream_scheme", f"security scheme {wanted!r} ({schemes[wanted].type}) cannot take a "
                        "pasted credential")  # fmt: skip
        return (option,)
    if not schemes:
        return (PasteOption(BEARER, "Bearer token (sent on every call)", "the token"),)
    options = tuple(o for o in (_paste_option(s) for s in schemes.values()) if o is not None)
    if not options:
        raise _fail(name, "upstream_auth", "none of the spec's security schemes can take a pasted credential "
                    "(set upstream_scheme = 'bearer', or upstream_paste = false with [upstream_oauth])")  # fmt: skip
    return options


def _link_option(name: str, entry: ServerEntry, spec: ApiSpec, env: Mapping[str, str]) -> LinkOption | None:
    cfg = entry.upstream_oauth
    if cfg is None:
        return None
    key = "upstream_oauth"
    schemes = spec.security_schemes
    scheme: SecurityScheme | None
    if cfg.scheme is not None:
        scheme = schemes.get(cfg.scheme)
        if scheme is None or scheme.type not in ("oauth2", "openIdConnect"):
            found = [s.name for s in schemes.values() if s.type in ("oauth2", "openIdConnect")]
            raise _fail(name, f"{key}.scheme", f"the spec has no OAuth security scheme {cfg.scheme!r} "
                        f"(OAuth schemes: {', '.join(found) or 'none'})")  # fmt: skip
    else:
        oauth = [s for s in schemes.values() if s.type == "oauth2"]
        scheme = next((s for s in oauth if s.flow("authorizationCode")), oauth[0] if oauth else None)
    flow = scheme.flow("authorizationCode") if scheme is not None else None
    authorization_url = cfg.authorization_url or (flow.authorization_url if flow else None)
    token_url = cfg.token_url or (flow.token_url if flow else None)
    if not authorization_url or not token_url:
        raise _fail(name, key, "the spec declares no authorizationCode flow: set authorization_url and token_url")
    refresh_url = (flow.refresh_url if flow and not cfg.token_url else None) or token_url
    for what, url in (("authorization_url", authorization_url), ("token_url", token_url),
                      ("refresh_url", refresh_url)):  # fmt: skip
        try:
            check_provider_url(url)
        except ValueError as exc:
            raise _fail(name, key, f"the flow's {what} {url!r} {exc}") from None
    declared = dict(flow.scopes) if flow else {}
    scopes = cfg.scopes if cfg.scopes is not None else tuple(declared)
    secret = None
    if cfg.client_secret is not None:
        secret = (env.get(cfg.client_secret) or "").strip()
        if not secret:
            raise _fail(name, f"{key}.client_secret", f"environment variable {cfg.client_secret} is not set")
        if any(c in secret for c in "\r\n\0"):
            raise _fail(name, f"{key}.client_secret", f"environment variable {cfg.client_secret} holds a line break")
    return LinkOption(
        scheme=scheme.name if scheme is not None else BEARER, authorization_url=authorization_url,
        token_url=token_url, refresh_url=refresh_url, revocation_url=cfg.revocation_url, scopes=scopes,
        scope_descriptions=declared, registration=ClientRegistration(cfg.client_id, secret, cfg.auth_method),
        authorize_params=dict(cfg.authorize_params),
    )  # fmt: skip


def plan_for(name: str, entry: ServerEntry, spec: ApiSpec, env: Mapping[str, str]) -> PerUserPlan:
    """The plan of one per-user server; raises ``CodemodeError`` (for that server alone) when unusable."""
    return PerUserPlan(
        server=name, title=spec.title or name, paste=_paste_options(name, entry, spec),
        link=_link_option(name, entry, spec, env), schemes=dict(spec.security_schemes),
    )  # fmt: skip
