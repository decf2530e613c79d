"""The provider's two HTML pages: sign-in and consent. Plain forms, no JavaScript, labelled fields."""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

__all__ = ["consent_page", "login_page"]

SCOPE_TEXT = {
    "openid": "Sign you in (your user id)",
    "profile": "Your user name",
    "email": "Your e-mail address",
    "notes:read": "Read your notes",
    "notes:write": "Create, change and delete your notes",
}


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title></head><body><main><h1>{escape(title)}</h1>{body}</main></body></html>"
    )


def login_page(*, action: str, csrf: str, next_url: str, error: str = "", username: str = "") -> str:
    alert = f'<p role="alert" id="error">{escape(error)}</p>' if error else ""
    return _page(
        "Sign in to the test provider",
        f"""{alert}<form method="post" action="{escape(action)}">
<input type="hidden" name="csrf_token" value="{escape(csrf)}">
<input type="hidden" name="next" value="{escape(next_url)}">
<p><label for="username">Username</label> <input id="username" name="username" autocomplete="username"
 value="{escape(username)}" required></p>
<p><label for="password">Password</label> <input id="password" name="password" type="password"
 autocomplete="current-password" required></p>
<p><button type="submit">Sign in</button></p></form>""",
    )


def consent_page(*, action: str, csrf: str, client_id: str, username: str, scopes: Iterable[str]) -> str:
    boxes = "".join(
        f'<li><label><input type="checkbox" name="grant_scope" value="{escape(s)}" checked> '
        f"<code>{escape(s)}</code>: {escape(SCOPE_TEXT.get(s, s))}</label></li>"
        for s in scopes
    )
    return _page(
        "Allow access?",
        f"""<p>Signed in as <strong id="user">{escape(username)}</strong>.</p>
<p>The application <strong id="client">{escape(client_id)}</strong> asks for:</p>
<form method="post" action="{escape(action)}">
<input type="hidden" name="csrf_token" value="{escape(csrf)}">
<fieldset><legend>Permissions</legend><ul>{boxes}</ul></fieldset>
<p><button type="submit" name="decision" value="approve">Approve</button>
<button type="submit" name="decision" value="deny">Deny</button></p></form>""",
    )
