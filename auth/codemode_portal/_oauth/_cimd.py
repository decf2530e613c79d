"""Client ID Metadata Documents: a ``client_id`` that is an https URL names the client's metadata.

The fetch is guarded against server-side request forgery:

* only ``https://`` (``http://`` only for loopback, and only when private hosts are allowed);
* the host name is resolved once; every address must be public (no loopback, private, link-local,
  multicast, reserved or unspecified ranges) unless ``allow_private_client_metadata_hosts``;
  the connection then goes to the checked address (no second resolution to rebind);
* no redirects; a size cap (read as a stream, cut off past the cap) and a time cap for the whole fetch;
* the document must be a JSON object whose ``client_id`` equals the URL exactly, for a public
  client (``token_endpoint_auth_method`` ``none``), with valid redirect URIs.

Documents are cached (bounded, for ``client_metadata_cache_seconds``).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
import time
from collections import OrderedDict
from urllib.parse import urlsplit, urlunsplit

import httpx

from .._config import PortalSettings, is_loopback_host
from .._store import Client
from ._clients import MetadataProblem, client_from_metadata, validate_metadata

__all__ = ["MetadataFetcher", "is_metadata_url"]

MAX_URL = 2000


def is_metadata_url(client_id: str, settings: PortalSettings) -> bool:
    """Whether ``client_id`` is to be fetched as a metadata document."""
    if client_id.startswith("https://"):
        return True
    if client_id.startswith("http://") and settings.allow_private_client_metadata_hosts:
        try:
            return is_loopback_host(urlsplit(client_id).hostname)
        except ValueError:
            return False
    return False


# Ranges Python's ``is_global`` lets through on some versions, or that embed another address:
# IETF protocol assignments (192.0.0.0/24), the 6to4 relay anycast, benchmarking, documentation,
# deprecated site-local IPv6, 6to4 and Teredo (both embed an IPv4 address; both deprecated).
_NEVER = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4",
    "100::/64", "2001::/23", "2001:db8::/32", "2002::/16", "3fff::/20", "fec0::/10",
))  # fmt: skip
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _address_ok(address: str, allow_private: bool) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:  # NAT64: the IPv4 address it reaches is what counts
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if allow_private:
        return not (ip.is_unspecified or ip.is_multicast)
    if any(ip.version == n.version and ip in n for n in _NEVER):
        return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified or ip.is_link_local)


class MetadataFetcher:
    """Fetches, validates and caches metadata documents (synchronous: runs on a worker thread)."""

    def __init__(self, settings: PortalSettings, *, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        self._transport = transport
        self._cache: OrderedDict[str, tuple[float, Client]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, url: str) -> Client:
        """The client the document at ``url`` describes, or ``MetadataProblem`` saying why not."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(url)
            if hit is not None and hit[0] > now:
                self._cache.move_to_end(url)
                return hit[1]
        client = self._fetch(url)
        s = self.settings
        if s.client_metadata_cache_entries and s.client_metadata_cache_seconds:
            with self._lock:
                self._cache[url] = (now + s.client_metadata_cache_seconds, client)
                self._cache.move_to_end(url)
                while len(self._cache) > s.client_metadata_cache_entries:
                    self._cache.popitem(last=False)
        return client

    def _target(self, url: str) -> tuple[str, str, int, str]:
        """(scheme, host, port, checked address) for ``url``, or ``MetadataProblem``."""
        s = self.settings
        if len(url) > MAX_URL:
            raise MetadataProblem("the client_id URL is too long", field="client_id")
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise MetadataProblem("the client_id is not a valid URL", field="client_id") from None
        host = parts.hostname or ""
        if parts.scheme != "https" and not (parts.scheme == "http" and s.allow_private_client_metadata_hosts):
            raise MetadataProblem("a client_id metadata URL must use https://", field="client_id")
        if not host or parts.username is not None or parts.password is not None or parts.fragment:
            raise MetadataProblem(
                "a client_id metadata URL needs a host and no user info or fragment", field="client_id"
            )
        if parts.path in ("", "/"):
            raise MetadataProblem("a client_id metadata URL must have a path", field="client_id")
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise MetadataProblem(f"cannot resolve the client_id host {host!r}", field="client_id") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            raise MetadataProblem(f"cannot resolve the client_id host {host!r}", field="client_id")
        bad = [a for a in addresses if not _address_ok(a, s.allow_private_client_metadata_hosts)]
        if bad:
            raise MetadataProblem(
                f"the client_id host {host!r} resolves to a non-public address; metadata is only fetched from "
                "public hosts", field="client_id",
            )  # fmt: skip
        return parts.scheme, host, port, addresses[0]

    def _fetch(self, url: str) -> Client:
        s = self.settings
        scheme, host, port, address = self._target(url)
        parts = urlsplit(url)
        literal = f"[{address}]" if ":" in address else address
        direct = urlunsplit((scheme, f"{literal}:{port}", parts.path, parts.query, ""))
        default_port = port == (443 if scheme == "https" else 80)
        host_header = host if default_port else f"{host}:{port}"
        deadline = time.monotonic() + s.client_metadata_timeout_seconds
        body = bytearray()
        try:
            with httpx.Client(
                transport=self._transport, follow_redirects=False, timeout=s.client_metadata_timeout_seconds,
                trust_env=False,
            ) as http:  # fmt: skip
                with http.stream(
                    "GET", direct, headers={"Host": host_header, "Accept": "application/json"},
                    extensions={"sni_hostname": host},
                ) as response:  # fmt: skip
                    if 300 <= response.status_code < 400:
                        raise MetadataProblem("the client metadata document redirects; redirects are not followed")
                    if response.status_code != 200:
                        raise MetadataProblem(f"fetching the client metadata document gave HTTP {response.status_code}")
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > s.client_metadata_max_bytes:
                            raise MetadataProblem(
                                f"the client metadata document is larger than {s.client_metadata_max_bytes} bytes"
                            )
                        if time.monotonic() > deadline:
                            raise MetadataProblem("fetching the client metadata document took too long")
        except httpx.TimeoutException:
            raise MetadataProblem("fetching the client metadata document took too long") from None
        except httpx.HTTPError as exc:
            raise MetadataProblem(f"cannot fetch the client metadata document ({type(exc).__name__})") from None
        try:
            data = json.loads(bytes(body))
        except (ValueError, RecursionError):
            raise MetadataProblem("the client metadata document is not JSON") from None
        if not isinstance(data, dict):
            raise MetadataProblem("the client metadata document must be a JSON object")
        if data.get("client_id") != url:
            raise MetadataProblem("the document's client_id must equal its URL exactly", field="client_id")
        if "client_secret" in data or "client_secret_expires_at" in data:
            raise MetadataProblem("a metadata document must not carry a client secret")
        data = {**data, "token_endpoint_auth_method": data.get("token_endpoint_auth_method", "none")}
        meta = validate_metadata(data, max_redirect_uris=s.max_redirect_uris)
        if meta.token_endpoint_auth_method != "none":  # noqa: S105 - a method name
            raise MetadataProblem(
                "token_endpoint_auth_method: a metadata-document client is public ('none')",
                field="token_endpoint_auth_method",
            )  # fmt: skip
        return client_from_metadata(url, meta, kind="cimd")
