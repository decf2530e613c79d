"""Browser sessions and CSRF for the portal's pages.

One cookie (``__Host-cmp_session`` on https; ``cmp_session_<port>`` on plain http, because
browsers send a cookie of ``127.0.0.1`` to every port of it, so two portals on one host would
share one name and sign each other out) holds a random 256-bit value. Signed
in, the store maps its hash to the user (so a database dump reveals no session). Every form
carries ``HMAC(key, cookie value)`` as its CSRF token, so a token is bound to the browser's
session, before and after sign-in. The cookie is ``HttpOnly``, ``SameSite=Lax``, ``Path=/`` and
``Secure`` on https. Signing in replaces the value (no session fixation).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from ._config import PortalSettings
from ._crypto import SESSION_PREFIX, derive, new_token, same, token_hash
from ._store import AsyncStore, User

__all__ = ["BrowserSession", "Sessions"]

_VALUE = re.compile(r"^cmp_ss_[A-Za-z0-9_-]{43}$")


@dataclass
class BrowserSession:
    """The session of one request: its cookie value (new if the browser sent none) and user."""

    value: str
    user: User | None
    is_new: bool


class Sessions:
    def __init__(self, astore: AsyncStore, settings: PortalSettings, key: str) -> None:
        self.astore = astore
        self.settings = settings
        self.key = key
        self.secure = settings.issuer.startswith("https://")
        port = urlsplit(settings.issuer).port or 80
        self.cookie = "__Host-cmp_session" if self.secure else f"cmp_session_{port}"

    async def load(self, request: Request) -> BrowserSession:
        value = request.cookies.get(self.cookie, "")
        if not _VALUE.fullmatch(value):
            return BrowserSession(new_token(SESSION_PREFIX), None, True)
        user_id = await self.astore.call(self.astore.store.find_session, token_hash(value), time.time())
        user = await self.astore.call(self.astore.store.get_user, user_id) if user_id else None
        if user is not None and user.disabled:
            user = None
        return BrowserSession(value, user, False)

    def csrf(self, session: BrowserSession) -> str:
        return derive(self.key, "csrf", session.value)

    def csrf_ok(self, session: BrowserSession, submitted: str | None) -> bool:
        return not session.is_new and bool(submitted) and same(self.csrf(session), submitted or "")

    async def sign_in(self, user: User) -> BrowserSession:
        value = new_token(SESSION_PREFIX)
        expires = time.time() + self.settings.session_seconds
        await self.astore.call(self.astore.store.create_session, token_hash(value), user.id, expires)
        return BrowserSession(value, user, True)

    async def sign_out(self, session: BrowserSession) -> BrowserSession:
        await self.astore.call(self.astore.store.delete_session, token_hash(session.value))
        return BrowserSession(new_token(SESSION_PREFIX), None, True)

    def attach(self, response: Response, session: BrowserSession) -> Response:
        if session.is_new:
            response.set_cookie(
                self.cookie, session.value, max_age=self.settings.session_seconds, path="/", secure=self.secure,
                httponly=True, samesite="lax",
            )  # fmt: skip
        return response
