"""The portal's ASGI application (lands with the authorization server; see issue 6)."""

from __future__ import annotations

from ._config import PortalConfig
from ._errors import PortalError

__all__ = ["serve"]


def serve(config: PortalConfig) -> None:
    raise PortalError("the portal server is not built yet; this merge has its config, storage and CLI.",
                      code="portal.not_built")  # fmt: skip
