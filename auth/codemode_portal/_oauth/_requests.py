"""The thin adapter between Starlette and authlib's framework-neutral server: request objects
built from already-read HTTP data (so authlib can run on a worker thread) and a plain response."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from authlib.oauth2.rfc6749 import JsonRequest, OAuth2Request
from authlib.oauth2.rfc6749.requests import JsonPayload, OAuth2Payload

from .._store import User

__all__ = ["OAuthResponse", "PortalJsonRequest", "PortalRequest"]


class _Payload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for k, v in pairs:
            self._datalist[k].append(v)
        self._data = {k: v[0] for k, v in self._datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class PortalRequest(OAuth2Request):  # type: ignore[misc]
    """An OAuth request. ``pairs`` are the query (authorize) or form (token, revoke) parameters."""

    def __init__(
        self, method: str, uri: str, headers: Mapping[str, str], pairs: Sequence[tuple[str, str]], *, form: bool
    ) -> None:
        super().__init__(method, uri, headers=headers)  # case-insensitive (Starlette's Headers)
        self.payload = _Payload(pairs)
        self._form = dict(self.payload.data) if form else {}
        self._args = {} if form else dict(self.payload.data)
        # Set by the portal while the request is handled:
        self.user: User | None = None
        self.portal_server: str | None = None  # the server the request targets
        self.portal_resource: str | None = None  # the exact resource URI
        self.portal_requested: tuple[str, ...] = ()  # requested scopes (defaults applied)
        self.portal_approved: tuple[str, ...] | None = None  # what the user approved on the consent page
        self.portal_address: str = ""  # the client address (rate limits)

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form

    def values(self, name: str) -> list[str]:
        return list(self.payload.datalist.get(name, []))


class _JsonPayload(JsonPayload):  # type: ignore[misc]
    def __init__(self, data: Any) -> None:
        self._data = data

    @property
    def data(self) -> Any:
        return self._data


class PortalJsonRequest(JsonRequest):  # type: ignore[misc]
    def __init__(self, method: str, uri: str, headers: Mapping[str, str], data: Any, address: str) -> None:
        super().__init__(method, uri, headers=headers)
        self.payload = _JsonPayload(data)
        self.portal_address = address


@dataclass
class OAuthResponse:
    """What authlib answered: status, body (dict, or "" for redirects) and headers."""

    status: int
    body: Any
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def location(self) -> str | None:
        return next((v for k, v in self.headers if k.lower() == "location"), None)
