"""The sign-in and consent pages in headless Chromium (Debian's, through Playwright; tests/browser.py).

A person signs in, narrows the scopes, approves, and the browser lands on the client's redirect
URI with a code whose token carries only what was left checked; a denial lands there with
``access_denied``, ``state`` and ``iss``; the same flow works with JavaScript turned off. Basic
accessibility is checked on the rendered pages: one ``h1`` and no skipped heading levels,
landmarks, a label (accessible name) for every control, keyboard focus order equal to the
document order with a visible focus ring, and text contrast of at least WCAG AA for the CSS the
portal ships. The consent page's screenshot in docs/ is produced here
(``CODEMODE_UPDATE_SCREENSHOTS=1`` rewrites it).
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")

from authz_kit import DocServer
from portal_harness import PETSTORE, Flow, RunningPortal, running_portal

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "docs" / "portal-consent.png"
SERVERS = f"""
[servers.petstore]
spec = "{PETSTORE}"
base_url = "http://127.0.0.1:9/api/v3"
description = "The Swagger pet store"
"""
WRITE = "petstore:write"


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPortal]:
    with running_portal(tmp_path_factory.mktemp("browser"), SERVERS) as running:
        yield running


@pytest.fixture(scope="module")
def callback() -> Iterator[DocServer]:
    """Where the browser lands: a loopback server standing in for the client's redirect URI."""
    server = DocServer()
    yield server
    server.close()


@pytest.fixture
def client(portal: RunningPortal, callback: DocServer) -> Iterator[Flow]:
    with Flow(portal, redirect_uri=f"{callback.base}/callback") as flow:
        flow.register(client_name="Claude Desktop")
        yield flow


def start_url(flow: Flow, **overrides: Any) -> str:
    return f"{flow.portal.base}/authorize?{urlencode(flow.authorize_params(**overrides))}"


def sign_in(page: Page, portal: RunningPortal) -> None:
    assert page.get_by_role("heading", name="Sign in").is_visible()
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(portal.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


def landed(page: Page, flow: Flow) -> dict[str, str]:
    page.wait_for_url(re.compile("^" + re.escape(flow.redirect_uri) + r"\?"))
    return {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}


# == the flow a person goes through ============================================================
def test_sign_in_narrow_the_scopes_and_approve(browser: Browser, client: Flow, portal: RunningPortal,
                                               tmp_path: Path) -> None:  # fmt: skip
    page = browser.new_context(viewport={"width": 1000, "height": 900}).new_page()
    page.goto(start_url(client, scope="petstore:read petstore:write petstore:read:pets", state="narrow"))
    assert urlsplit(page.url).path == "/login"
    sign_in(page, portal)
    heading = page.get_by_role("heading", level=1)
    assert "Claude Desktop" in heading.inner_text() and "wants to use" in heading.inner_text()
    read_box = page.locator("input[type=checkbox][value='petstore:read']")
    assert read_box.is_checked() and read_box.is_disabled()  # always included
    shot = tmp_path / "consent.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("CODEMODE_UPDATE_SCREENSHOTS"):
        page.screenshot(path=str(SCREENSHOT), full_page=True)
    page.locator(f"input[type=checkbox][value='{WRITE}']").uncheck()
    page.get_by_role("button", name="Allow").click()
    q = landed(page, client)
    assert q["state"] == "narrow" and q["iss"] == portal.base and "code" in q
    token = client.exchange(q["code"]).json()
    assert token["scope"] == "petstore:read petstore:read:pets"  # what was left checked, nothing more


def test_deny_sends_access_denied_with_state_and_iss(browser: Browser, client: Flow, portal: RunningPortal) -> None:
    page = browser.new_page()
    page.goto(start_url(client, state="no-thanks"))
    sign_in(page, portal)
    page.get_by_role("button", name="Deny").click()
    q = landed(page, client)
    assert q == {"error": "access_denied", "state": "no-thanks", "iss": portal.base} | (
        {"error_description": q["error_description"]} if "error_description" in q else {})
    assert "code" not in q


def test_the_pages_work_without_javascript(browser: Browser, client: Flow, portal: RunningPortal) -> None:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(start_url(client, state="nojs"))
    sign_in(page, portal)
    page.locator(f"input[type=checkbox][value='{WRITE}']").uncheck()
    page.get_by_role("button", name="Allow").click()
    q = landed(page, client)
    assert q["state"] == "nojs"
    assert client.exchange(q["code"]).json()["scope"] == "petstore:read"
    page.goto(f"{portal.base}/account")  # the grant shows up, and its revoke button works
    assert page.get_by_role("heading", name="Your access").is_visible()
    page.get_by_role("button", name=re.compile("^Revoke access of Claude Desktop")).first.click()
    assert page.get_by_role("status").inner_text() == "Access revoked."
    context.close()


# == accessibility =============================================================================
AUDIT = r"""() => {
  const visible = (el) => { const r = el.getBoundingClientRect(), s = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && s.visibility !== "hidden" && s.display !== "none"; };
  const rgba = (c) => { const m = c.match(/rgba?\(([^)]+)\)/); if (!m) return [0, 0, 0, 0];
    const p = m[1].split(",").map(Number); return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor); if (c[3] > 0) return c; }
    return [255, 255, 255, 1]; };
  const contrast = [];
  for (const el of document.querySelectorAll("body *")) {
    const text = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!text || !visible(el) || el.closest("[disabled]") || el.matches(".skip")) continue;
    const s = getComputedStyle(el), fg = rgba(s.color), bg = background(el);
    const a = lum(fg), b = lum(bg), ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(s.fontSize), bold = parseInt(s.fontWeight) >= 700;
    const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    const what = `${el.tagName}.${el.className} "${el.textContent.trim().slice(0, 40)}"`;
    if (ratio < need) contrast.push(`${what} ${ratio.toFixed(2)}`);
  }
  const unnamed = [];
  for (const el of document.querySelectorAll("input:not([type=hidden]), select, textarea, button")) {
    const named = (el.labels && el.labels.length) || el.getAttribute("aria-label") || el.getAttribute("aria-labelledby")
      || (el.tagName === "BUTTON" && el.textContent.trim());
    if (!named) unnamed.push(el.outerHTML.slice(0, 80));
  }
  const headings = [...document.querySelectorAll("h1,h2,h3,h4,h5,h6")].map((h) => Number(h.tagName[1]));
  const focusable = "a[href], button:not([disabled]), input:not([disabled]):not([type=hidden]), select, textarea";
  const tabbable = [...document.querySelectorAll(focusable)]
    .filter((el) => visible(el) || el.matches(".skip")).map((el) => el.outerHTML.slice(0, 60));
  const positive = [...document.querySelectorAll("[tabindex]")].filter((el) => el.tabIndex > 0).length;
  return { contrast, unnamed, headings, tabbable, positive, lang: document.documentElement.lang,
           landmarks: ["header", "nav", "main", "footer"].filter((t) => document.querySelector(t)) };
}"""


def audit(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(AUDIT)
    assert result["lang"] == "en"
    assert result["landmarks"] == ["header", "nav", "main", "footer"]
    assert result["unnamed"] == [], f"controls without a label: {result['unnamed']}"
    assert result["contrast"] == [], f"text below WCAG AA contrast: {result['contrast']}"
    levels = result["headings"]
    assert levels.count(1) == 1 and levels[0] == 1, levels
    assert all(b - a <= 1 for a, b in itertools.pairwise(levels)), f"a heading level is skipped: {levels}"
    assert result["positive"] == 0  # no tabindex > 0: focus follows the document
    return result


def focus_order(page: Page, count: int) -> list[str]:
    """What Tab focuses, from the first element (the skip link) on."""
    page.locator("a.skip").focus()
    order = [page.evaluate("() => document.activeElement.outerHTML.slice(0, 60)")]
    for _ in range(count - 1):
        page.keyboard.press("Tab")
        order.append(page.evaluate("() => document.activeElement.outerHTML.slice(0, 60)"))
    return order


def test_sign_in_and_consent_pages_pass_basic_accessibility_checks(browser: Browser, client: Flow,
                                                                   portal: RunningPortal) -> None:  # fmt: skip
    page = browser.new_context(viewport={"width": 1000, "height": 900}).new_page()
    page.goto(start_url(client))
    login = audit(page)
    assert focus_order(page, len(login["tabbable"])) == login["tabbable"]
    page.get_by_label("User name").fill("nobody")
    page.get_by_label("Password").fill("wrong-password")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    assert page.get_by_role("alert").is_visible()  # a refused sign-in is announced
    assert page.get_by_label("User name").get_attribute("aria-describedby") == "login-error"
    audit(page)
    sign_in(page, portal)
    consent = audit(page)
    order = focus_order(page, len(consent["tabbable"]))
    assert order == consent["tabbable"], "keyboard focus order differs from the document order"
    names = [o for o in order if o.startswith("<button")]
    assert names[-2:] == [n for n in names if "decision" in n]  # Deny, then Allow, after every checkbox
    assert "deny" in names[-2] and "approve" in names[-1]
    page.get_by_role("button", name="Deny").focus()
    page.keyboard.press("Tab")  # to Allow, by keyboard: the focus ring must show
    assert page.evaluate("() => document.activeElement.value") == "approve"
    ring = page.evaluate("() => { const s = getComputedStyle(document.activeElement);"
                         " return [s.outlineStyle, parseFloat(s.outlineWidth)]; }")
    assert ring[0] != "none" and ring[1] >= 2, ring
