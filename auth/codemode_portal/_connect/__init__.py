"""``codemode connect``: a stdio MCP server that forwards to a server of the OAuth portal, signing
in with the mcp SDK's OAuth client support (the role ``mcp-remote`` plays in the npm world).

It uses only the portal's public HTTP surface and does not import the portal's server modules.
See docs/portal.md, "codemode connect".
"""

from __future__ import annotations

from ._auth import BridgeAuth, FileStorage
from ._bridge import Headers, forward
from ._callback import LoopbackCallback
from ._errors import AuthorizationFailed, ConnectError, ConnectUsageError
from ._run import ConnectSettings, bridge, login, logout
from ._tokens import StoredState, TokenFile, config_dir, token_path

__all__ = [
    "AuthorizationFailed",
    "BridgeAuth",
    "ConnectError",
    "ConnectSettings",
    "ConnectUsageError",
    "FileStorage",
    "Headers",
    "LoopbackCallback",
    "StoredState",
    "TokenFile",
    "bridge",
    "config_dir",
    "forward",
    "login",
    "logout",
    "token_path",
]
