"""Self-test of headless Chromium + Playwright (tests/browser.py): a loopback page, a form, a screenshot."""

from __future__ import annotations

import contextlib
import html
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import pytest
from browser import async_chromium, chromium_path

if TYPE_CHECKING:
    from playwright.sync_api import Page

FORM = b"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign in</title></head>
<body><h1>Sign in</h1><form method="post" action="/submit">
<label>Name <input name="name" id="name"></label>
<label><input type="checkbox" name="scope" value="read" checked> read</label>
<label><input type="checkbox" name="scope" value="write" checked> write</label>
<button type="submit">Approve</button></form></body></html>"""


class _Handler(BaseHTTPRequestHandler):
    posts: list[dict[str, list[str]]]

    def do_GET(self) -> None:
        self._reply(200, FORM)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        form = parse_qs(self.rfile.read(length).decode())
        self.posts.append(form)
        name = html.escape(form.get("name", [""])[0])
        scopes = html.escape(" ".join(form.get("scope", [])))
        self._reply(200, f"<html><body><p id=done>Hello {name}; scopes: {scopes}</p></body></html>".encode())

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@contextlib.contextmanager
def _form_site() -> Iterator[tuple[str, list[dict[str, list[str]]]]]:
    posts: list[dict[str, list[str]]] = []
    handler = type("Handler", (_Handler,), {"posts": posts})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", posts
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_fill_and_submit_a_form_then_screenshot(page: Page, tmp_path: Path) -> None:
    with _form_site() as (url, posts):
        page.goto(url)
        assert page.title() == "Sign in"
        page.get_by_label("Name").fill("alice <&>")
        page.get_by_label("write").uncheck()
        shot = tmp_path / "form.png"
        page.screenshot(path=str(shot), full_page=True)
        page.get_by_role("button", name="Approve").click()
        page.wait_for_selector("#done")
        assert page.text_content("#done") == "Hello alice <&>; scopes: read"
    assert posts == [{"name": ["alice <&>"], "scope": ["read"]}]
    width, height = _png_size(shot.read_bytes())
    assert width > 100 and height > 50
    assert page.evaluate("navigator.userAgent").find("HeadlessChrome") >= 0


def test_each_page_has_its_own_cookies(page: Page) -> None:
    with _form_site() as (url, _):
        page.goto(url)
        assert page.context.cookies() == []
        page.context.add_cookies([{"name": "session", "value": "x", "url": url}])
        assert [c["name"] for c in page.context.cookies()] == ["session"]


def test_second_page_starts_without_the_first_ones_cookies(page: Page) -> None:
    assert page.context.cookies() == []


async def test_async_api_drives_the_same_browser() -> None:
    with _form_site() as (url, posts):
        async with async_chromium() as browser:
            context = await browser.new_context()
            page = await context.new_page()
            await page.goto(url)
            await page.fill("#name", "bob")
            await page.click("button")
            await page.wait_for_selector("#done")
            text = await page.text_content("#done")
            await context.close()
    assert text == "Hello bob; scopes: read write"
    assert posts == [{"name": ["bob"], "scope": ["read", "write"]}]


def test_missing_chromium_skips_naming_the_setup_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEMODE_CHROMIUM", str(tmp_path / "no-chromium"))
    with pytest.raises(pytest.skip.Exception, match=r"scripts/setup-browser\.sh"):
        chromium_path()
