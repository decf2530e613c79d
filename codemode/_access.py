"""Who is calling a server, and what they may do: the seam to whatever authenticates clients.

The engine authenticates no one. A host that does (the OAuth portal) builds the server with
``CodemodeServer(..., access=callable)``; the callable runs inside each MCP request and
returns the :class:`Caller` behind it, or ``None`` on a transport without authentication
(then only the server's own policy applies, as before).

A caller narrows, never widens, what the server allows:

* :meth:`Caller.denial` says why one operation is out of the caller's reach (e.g. a scope
  the token lacks). ``execute`` turns it into a catchable ``PermissionError`` before the
  call is built, so it never reaches the upstream; ``search`` marks the operation with it.
* ``credentials`` are the caller's own upstream credentials (per-user upstream identity).
  When set they are used *instead of* the server's shared credentials, for every call of
  that caller, and their secrets are scrubbed from what the guest sees. When ``None`` the
  server's shared credentials apply.
* ``subject`` and ``client_id`` are copied into every :class:`~codemode._upstream.AuditEvent`.

The MCP client's own token is never part of a :class:`Caller`: it cannot be sent upstream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ._ir import Operation

if TYPE_CHECKING:
    from ._upstream_types import UpstreamRequest

__all__ = ["AccessHook", "Caller", "CredentialSource"]


@runtime_checkable
class CredentialSource(Protocol):
    """Injects upstream credentials into a request. :class:`~codemode._credentials.Credentials`
    is the shared, environment-configured implementation; the portal adds per-user ones."""

    async def apply(self, request: UpstreamRequest) -> UpstreamRequest:
        """The request with credentials added. May raise ``UpstreamError`` (e.g. none configured)."""
        ...

    def invalidate_tokens(self, request: UpstreamRequest) -> bool:
        """Forget fetched tokens after the upstream answered 401; True when a retry may help."""
        ...

    def secrets(self) -> Iterable[str]:
        """Every secret value (and derived form) this source may put on the wire, for scrubbing."""
        ...

    def reserved(self) -> frozenset[tuple[str, str]]:
        """Where this source may put a credential, as ``(location, lower-case name)``: guest code
        may not set a header, query parameter or cookie of that name (it is refused, never sent)."""
        ...


def _no_denial(_op: Operation) -> str | None:
    return None


@dataclass(frozen=True)
class Caller:
    """The authenticated identity behind one MCP request (see the module docstring)."""

    subject: str
    client_id: str | None = None
    denial: Callable[[Operation], str | None] = field(default=_no_denial, repr=False, compare=False)
    credentials: CredentialSource | None = field(default=None, repr=False, compare=False)


AccessHook = Callable[[], "Caller | None"]
"""Called inside an MCP request (tool call); returns the caller, or None when unauthenticated."""
