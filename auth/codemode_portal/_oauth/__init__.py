"""The authorization server: authlib's ``AuthorizationServer`` with the portal's grants, clients
(RFC 7591 registration and Client ID Metadata Documents), revocation and metadata."""

from __future__ import annotations

from ._cimd import MetadataFetcher, is_metadata_url
from ._clients import MetadataProblem, OAuthClient, redirect_uri_problem, validate_metadata
from ._context import OAuthContext, Target
from ._routes import as_metadata, oauth_routes
from ._server import PortalAuthorizationServer

__all__ = [
    "MetadataFetcher",
    "MetadataProblem",
    "OAuthClient",
    "OAuthContext",
    "PortalAuthorizationServer",
    "Target",
    "as_metadata",
    "is_metadata_url",
    "oauth_routes",
    "redirect_uri_problem",
    "validate_metadata",
]
