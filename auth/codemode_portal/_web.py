"""What every page handler shares: templates, security headers, sessions, the client address,
and the seams for later login methods and account pages (``LoginMethod``, ``NavItem``)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._audit import AuditLog
from ._config import PortalSettings
from ._session import BrowserSession, Sessions
from ._store import AsyncStore
from ._users import Users

__all__ = [
    "MAX_FORM_BYTES",
    "LoginMethod",
    "NavItem",
    "PasswordLogin",
    "PublicPathRedirects",
    "Web",
    "page_headers",
    "rate_scope",
    "read_form",
]

TEMPLATES = Path(__file__).resolve().parent / "templates"
MAX_FORM_BYTES = 64_000


class LoginMethod(Protocol):
    """A way to sign in, listed on the login page. ``key == "password"`` renders the built-in form;
    any other method is a link to ``start_url`` (``?next=`` appended) that it serves itself
    (e.g. OIDC at ``/login/oidc``) and that ends by calling ``Web.sessions.sign_in(user)``."""

    @property
    def key(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def start_url(self) -> str: ...


@dataclass(frozen=True)
class PasswordLogin:
    key: str = "password"
    label: str = "User name and password"
    start_url: str = "/login"


@dataclass(frozen=True)
class NavItem:
    """An extra link in the signed-in navigation (e.g. ``/account/credentials``)."""

    href: str
    label: str


def page_headers(*, form_targets: Sequence[str] = ()) -> dict[str, str]:
    """Security headers of an HTML page. ``form_targets`` are origins a form's POST may redirect to:
    Chrome applies ``form-action`` to the redirect after a form POST, so the consent page allows
    the client's redirect origin there."""
    form_action = " ".join(["'self'", *form_targets])
    csp = (
        "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
        f"form-action {form_action}; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": csp,
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
        "Pragma": "no-cache",
    }


async def read_form(request: Request, limit: int = MAX_FORM_BYTES) -> list[tuple[str, str]] | None:
    """The pairs of an ``application/x-www-form-urlencoded`` body, or None (wrong type, too big, bad)."""
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=1000)
    except (UnicodeDecodeError, ValueError):
        return None


@dataclass
class Web:
    settings: PortalSettings
    astore: AsyncStore
    sessions: Sessions
    users: Users
    audit: AuditLog
    login_methods: list[LoginMethod] = field(default_factory=lambda: [PasswordLogin()])
    nav_extra: list[NavItem] = field(default_factory=list)
    env: Environment = field(init=False)

    def __post_init__(self) -> None:
        self.env = Environment(
            loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(default=True), auto_reload=False
        )

    def address(self, request: Request) -> str:
        """Who a per-address limit counts (sign-in failures, registrations, sign-in starts): see
        :func:`rate_scope`."""
        if self.settings.trust_forwarded_for:
            forwarded = request.headers.get("x-forwarded-for", "")
            if forwarded.strip():
                return rate_scope(forwarded.split(",")[-1].strip()[:100])
        return rate_scope(request.client.host) if request.client else "unknown"

    def render(
        self,
        session: BrowserSession,
        template: str,
        *,
        status: int = 200,
        form_targets: Sequence[str] = (),
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> Response:
        html = self.env.get_template(template).render(
            user=session.user, csrf=self.sessions.csrf(session), issuer=self.settings.issuer,
            nav_extra=self.nav_extra, base=self.settings.base_path, **context,
        )  # fmt: skip
        response = HTMLResponse(html, status_code=status, headers={**page_headers(form_targets=form_targets),
                                                                  **(headers or {})})  # fmt: skip
        return self.sessions.attach(response, session)

    def error(
        self, session: BrowserSession, status: int, heading: str, message: str, detail: str | None = None
    ) -> Response:
        return self.render(session, "error.html", status=status, title=heading, heading=heading, message=message,
                           detail=detail)  # fmt: skip


class PublicPathRedirects:
    """ASGI middleware: when ``public_url`` has a path (a proxy strips it before the portal), every
    root-relative ``Location`` the portal sends (``/login?…``, ``/account``…) gets that path in
    front, so a browser stays under the public URL. Absolute URLs (a client's redirect URI, an
    upstream provider) are left alone. Templates prefix their links with ``{{ base }}`` likewise."""

    def __init__(self, app: ASGIApp, base_path: str) -> None:
        self.app = app
        self.prefix = base_path.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.prefix:
            await self.app(scope, receive, send)
            return

        async def prefixed(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, self.prefix + v if k.lower() == b"location" and v[:1] == b"/" and v[1:2] not in (b"/", b"\\")
                     else v)
                    for k, v in message.get("headers", [])
                ]  # fmt: skip
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, prefixed)


def rate_scope(address: str) -> str:
    """An IPv4 address as it is, an IPv6 address as its /64: one subscriber usually holds a whole
    /64, so limits counted per IPv6 address would let one client rotate through 2**64 of them. An
    IPv4-mapped IPv6 address counts as the IPv4 address."""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return address[:100]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


def safe_next(value: str | None) -> str:
    """A post-login target: a local path only (no scheme, no host, no ``//`` or ``\\`` tricks)."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")) or "\\" in value:
        return "/account"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value) or len(value) > 8000:
        return "/account"
    return value
