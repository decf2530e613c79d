"""What a spec says about reaching and authenticating to the API: servers and security.

Read once by :mod:`codemode._build` into the IR (``ApiSpec.servers``, ``Operation.servers``,
``SecurityScheme``, ``Operation.security`` and ``security_scopes``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin

from ._errors import SpecError
from ._ir import OAuthFlow, SecurityScheme
from ._loader import DocumentStore
from ._text import plain_text

__all__ = [
    "SWAGGER_FLOWS",
    "pointer_escape",
    "security",
    "security_schemes",
    "security_scopes",
    "servers",
    "swagger_servers",
]

# Swagger 2.0 oauth2 `flow` -> OpenAPI 3 flow name.
SWAGGER_FLOWS = {
    "accessCode": "authorizationCode", "application": "clientCredentials",
    "implicit": "implicit", "password": "password",
}  # fmt: skip
_SERVER_VAR = re.compile(r"\{([^}]+)\}")

Warn = Callable[[str, str], None]


def pointer_escape(part: str) -> str:
    """One JSON-pointer segment (RFC 6901: ``~`` and ``/`` escaped)."""
    return part.replace("~", "~0").replace("/", "~1")


def _url(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def servers(node: Any, where: str, root_uri: str, warn: Warn) -> tuple[str, ...]:
    """OpenAPI 3 ``servers`` with their variables at their defaults; relative URLs against a fetched spec's URL."""
    out: list[str] = []
    if not isinstance(node, list):
        return ()
    for i, server in enumerate(node):
        if not isinstance(server, dict) or not isinstance(server.get("url"), str):
            warn(f"{where}/{i}", "server entry has no url; ignored")
            continue
        variables = server.get("variables") or {}

        def sub(m: re.Match[str], variables: dict[str, Any] = variables) -> str:
            var = variables.get(m.group(1)) or {}
            enum = var.get("enum") or []
            return str(var.get("default", enum[0] if enum else m.group(0)))

        url = _SERVER_VAR.sub(sub, server["url"])
        if root_uri.startswith("http") and not url.startswith(("http://", "https://")):
            url = urljoin(root_uri, url)
        out.append(url.rstrip("/") if url != "/" else url)
    return tuple(out)


def swagger_servers(root: dict[str, Any]) -> tuple[str, ...]:
    """Swagger 2.0 ``schemes`` + ``host`` + ``basePath`` (https preferred)."""
    host = root.get("host")
    base = str(root.get("basePath") or "")
    if base and not base.startswith("/"):
        base = "/" + base
    if not host:
        return (base.rstrip("/"),) if base.strip("/") else ()
    schemes = root.get("schemes") or ["https"]
    scheme = "https" if "https" in schemes else str(schemes[0])
    return (f"{scheme}://{host}{base}".rstrip("/"),)


def security_schemes(store: DocumentStore, swagger: bool, warn: Warn) -> dict[str, SecurityScheme]:
    root = store.root
    raw = (root.get("securityDefinitions") if swagger else (root.get("components") or {}).get("securitySchemes")) or {}
    out: dict[str, SecurityScheme] = {}
    for name, node in raw.items():
        try:
            node = store.deref(node, store.root_uri).node
        except (KeyError, SpecError):
            warn(f"/components/securitySchemes/{pointer_escape(name)}", "security scheme $ref does not resolve")
            continue
        if not isinstance(node, dict):
            continue
        kind = str(node.get("type", ""))
        if kind == "basic":  # Swagger 2.0
            out[name] = SecurityScheme(name, "http", scheme="basic")
            continue
        flows = oauth_flows(node, swagger) if kind == "oauth2" else ()
        cc = next((f for f in flows if f.kind == "clientCredentials"), None)
        oidc = node.get("openIdConnectUrl")
        out[name] = SecurityScheme(
            name=name,
            type=kind,
            scheme=str(node["scheme"]).lower() if node.get("scheme") else None,
            location=node.get("in"),
            param_name=node.get("name"),
            token_url=cc.token_url if cc else None,
            scopes=tuple(s for s, _ in cc.scopes) if cc else (),
            flows=flows,
            openid_connect_url=oidc if isinstance(oidc, str) else None,
        )
    return out


def oauth_flows(node: dict[str, Any], swagger: bool) -> tuple[OAuthFlow, ...]:
    """OpenAPI 3 ``flows``, or the one Swagger 2.0 ``flow`` (accessCode, application, …) mapped onto them."""
    if swagger:
        kind = SWAGGER_FLOWS.get(str(node.get("flow")))
        raw: dict[str, Any] = {kind: node} if kind else {}
    else:
        flows = node.get("flows")
        raw = flows if isinstance(flows, dict) else {}
    out: list[OAuthFlow] = []
    for kind, flow in raw.items():
        if not isinstance(flow, dict):
            continue
        declared = flow.get("scopes")
        scopes: dict[str, Any] = declared if isinstance(declared, dict) else {}
        out.append(
            OAuthFlow(
                kind=str(kind),
                authorization_url=_url(flow.get("authorizationUrl")),
                token_url=_url(flow.get("tokenUrl")),
                refresh_url=_url(flow.get("refreshUrl")),
                scopes=tuple((str(s), plain_text(d, 200)) for s, d in scopes.items()),
            )
        )
    return tuple(out)


def security(node: Any) -> tuple[tuple[str, ...], ...] | None:
    """The scheme names of each alternative of a security requirement list (``None``: not given)."""
    if not isinstance(node, list):
        return None
    return tuple(tuple(req.keys()) for req in node if isinstance(req, dict))


def security_scopes(node: Any) -> tuple[tuple[str, ...], ...] | None:
    """For each alternative of a security requirement list, the scopes it names (parallel to ``security``)."""
    if not isinstance(node, list):
        return None
    return tuple(
        tuple(dict.fromkeys(str(s) for v in req.values() if isinstance(v, list) for s in v))
        for req in node
        if isinstance(req, dict)
    )
