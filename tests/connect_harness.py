"""Running ``codemode connect`` the way Claude Desktop does, for tests: a subprocess started by the
official mcp stdio client, its browser replaced by ``consent_browser.py`` (through ``$BROWSER``,
which Python's ``webbrowser`` honours) or driven by the test from the address printed on stderr."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

HERE = Path(__file__).resolve().parent
CODEMODE = Path(sys.executable).with_name("codemode")
URL_IN_LOG = re.compile(r"^\s+(http://\S+/authorize\?\S+)$", re.MULTILINE)


def text(result: Any) -> str:
    return "".join(c.text for c in result.content if hasattr(c, "text"))


@dataclass
class Bridge:
    """One ``codemode connect URL`` configuration: its config folder, its browser, its logs."""

    url: str
    home: Path
    user: str = "admin"
    password: str = ""
    extra_args: list[str] = field(default_factory=list)
    decision: str = "approve"
    uncheck: str = ""

    @property
    def config(self) -> Path:
        return self.home / "config"

    @property
    def consent_log(self) -> Path:
        return self.home / "consent.jsonl"

    @property
    def stderr_path(self) -> Path:
        return self.home / "bridge-stderr.log"

    def consents(self) -> list[dict[str, Any]]:
        if not self.consent_log.exists():
            return []
        return [json.loads(line) for line in self.consent_log.read_text().splitlines() if line.strip()]

    def token_files(self) -> list[Path]:
        folder = self.config / "codemode" / "connect"
        return sorted(p for p in folder.glob("*.json")) if folder.exists() else []

    def browser_script(self) -> Path:
        """An executable that ``webbrowser`` runs with the URL (``$BROWSER`` names one program)."""
        script = self.home / "browser"
        script.write_text(f"#!{sys.executable}\nimport runpy, sys\nsys.argv[0] = {str(HERE / 'consent_browser.py')!r}\n"
                          f"runpy.run_path(sys.argv[0], run_name='__main__')\n")  # fmt: skip
        script.chmod(0o700)
        return script

    def env(self) -> dict[str, str]:
        return {
            "XDG_CONFIG_HOME": str(self.config), "HOME": str(self.home), "BROWSER": str(self.browser_script()),
            "CONSENT_USER": self.user, "CONSENT_PASSWORD": self.password, "CONSENT_DECISION": self.decision,
            "CONSENT_UNCHECK": self.uncheck, "CONSENT_LOG": str(self.consent_log),
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "NO_PROXY": "*", "no_proxy": "*",
        }  # fmt: skip

    def parameters(self, *args: str, entry: dict[str, Any] | None = None) -> StdioServerParameters:
        """``codemode connect URL``, or exactly the command of a client config ``entry``."""
        if entry is not None:
            return StdioServerParameters(command=entry["command"], args=entry["args"],
                                         env={**self.env(), **entry.get("env", {})})  # fmt: skip
        return StdioServerParameters(command=str(CODEMODE), args=["connect", self.url, *self.extra_args, *args],
                                     env=self.env())  # fmt: skip

    @asynccontextmanager
    async def client(
        self, *args: str, mode: Any = "auto", timeout: float = 120, entry: dict[str, Any] | None = None
    ) -> AsyncIterator[Client]:
        """The official mcp client over stdio, connected through the bridge (handshake done)."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.stderr_path, "a", encoding="utf-8") as errlog:
            transport = stdio_client(self.parameters(*args, entry=entry), errlog=errlog)
            async with Client(transport, mode=mode, read_timeout_seconds=timeout) as client:
                yield client

    def printed_urls(self) -> list[str]:
        return URL_IN_LOG.findall(self.stderr_path.read_text()) if self.stderr_path.exists() else []

    def wait_for_url(self, count: int, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            urls = self.printed_urls()
            if len(urls) >= count:
                return urls[count - 1]
            time.sleep(0.05)
        raise AssertionError(f"the bridge printed no sign-in address; stderr:\n{self.stderr_path.read_text()}")


class MetadataDocuments:
    """Client ID Metadata Documents served over https on 127.0.0.1 (the SDK only uses https
    client_ids), with a throwaway self-signed certificate; ``trust`` is an SSL context that
    trusts it, for the portal's document fetcher."""

    def __init__(self, folder: Path) -> None:
        import datetime
        import ipaddress
        import ssl
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256())
        )  # fmt: skip
        folder.mkdir(parents=True, exist_ok=True)
        cert_file, key_file = folder / "cert.pem", folder / "key.pem"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))  # fmt: skip
        self.trust = ssl.create_default_context(cafile=str(cert_file))
        self.docs: dict[str, bytes] = {}
        self.hits: list[str] = []
        docs = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                docs.hits.append(self.path)
                body = docs.docs.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: Any) -> None:
                return None

        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert_file, key_file)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = server_ctx.wrap_socket(self.server.socket, server_side=True)
        self.base = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="metadata-documents", daemon=True)
        self.thread.start()

    def document(self, path: str, redirect_uris: list[str], **fields: Any) -> str:
        url = self.base + path
        doc = {"client_id": url, "client_name": "Metadata Document Client", "redirect_uris": redirect_uris,
               "grant_types": ["authorization_code", "refresh_token"], "token_endpoint_auth_method": "none",
               **fields}  # fmt: skip
        self.docs[path] = json.dumps(doc).encode()
        return url

    def trust_in(self, portal: Any) -> None:
        """Make a running portal's document fetcher trust this server's certificate."""
        import httpx

        portal.portal.oauth.ctx.fetcher._transport = httpx.HTTPTransport(verify=self.trust)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
