"""The upstream seam: what a request and a response are, and the :class:`Upstream` protocol.

:class:`~codemode._upstream.HttpxUpstream` is the production implementation; tests use
``httpx.MockTransport`` under it, or any object with ``send``/``aclose``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

import httpx
import pydantic

from codemode._errors import ConfigError

if TYPE_CHECKING:
    from codemode._access import Caller

__all__ = [
    "NO_BODY",
    "AuditEvent",
    "AuditHook",
    "Upstream",
    "UpstreamRequest",
    "UpstreamResponse",
    "UpstreamSettings",
]


class _NoBody(enum.Enum):
    """Sentinel type: the request has no JSON body (``None`` is a valid JSON body)."""

    NO_BODY = "NO_BODY"


NO_BODY: Final = _NoBody.NO_BODY


class UpstreamSettings(pydantic.BaseModel):
    """How to reach the upstream API. Invalid values raise :class:`ConfigError`."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    base_url: str | None = None
    timeout_seconds: float = pydantic.Field(30.0, gt=0)
    connect_timeout_seconds: float = pydantic.Field(10.0, gt=0)
    max_response_bytes: int = pydantic.Field(5_000_000, gt=0)
    max_retries: int = pydantic.Field(2, ge=0, le=10)
    max_retry_wait_seconds: float = pydantic.Field(10.0, ge=0)
    headers: dict[str, str] = pydantic.Field(default_factory=dict)
    verify_tls: bool = True
    user_agent: str = "codemode-mcp"

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
                for err in exc.errors(include_input=False)
            )
            raise ConfigError(f"Invalid upstream settings: {problems}.", code="config.upstream") from None

    def __repr_args__(self) -> Any:  # header values are secrets
        for key, value in super().__repr_args__():
            yield key, ({k: "[REDACTED]" for k in value} if key == "headers" else value)

    @pydantic.field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL as exc:
            raise ValueError(f"not a URL ({exc})") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an absolute http:// or https:// URL")
        return value

    @pydantic.field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header_value in value.items():
            if not name or any(c in name for c in ' \t\r\n:()<>@,;\\"/[]?={}'):
                raise ValueError(f"invalid header name {name!r}")
            if any(c in header_value for c in "\r\n\0"):
                raise ValueError(f"the value of header {name!r} contains a line break")
        return value


@dataclass(frozen=True)
class UpstreamRequest:
    """One call to make. ``url`` is absolute, or relative to ``base_url``."""

    operation: str
    method: str
    url: str
    params: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)
    json: Any = NO_BODY
    data: dict[str, Any] | None = None
    files: dict[str, Any] | None = None
    content: bytes | None = None
    security: tuple[tuple[str, ...], ...] = ()
    caller: Caller | None = None  # who the call is made for: their credentials, their audit rows
    deadline: float | None = None  # time.monotonic() of the run's end: no attempt starts after it


@dataclass(frozen=True)
class UpstreamResponse:
    """The (scrubbed) answer. ``body`` is JSON data, text, ``{"base64", "content_type"}``
    for binary content, or ``None`` when empty."""

    status: int
    headers: dict[str, str]
    body: Any
    elapsed_ms: float
    attempts: int


@dataclass(frozen=True)
class AuditEvent:
    """What happened to one :meth:`Upstream.send`. ``url`` has query names, no values.

    ``subject`` and ``client_id`` name the :class:`~codemode._access.Caller` the call was
    made for (``None`` on a server without authentication)."""

    operation: str
    method: str
    url: str
    status: int | None
    elapsed_ms: float
    attempts: int
    error: str | None
    subject: str | None = None
    client_id: str | None = None


AuditHook = Callable[[AuditEvent], None]


class Upstream(Protocol):
    async def send(self, request: UpstreamRequest) -> UpstreamResponse: ...

    async def aclose(self) -> None: ...
