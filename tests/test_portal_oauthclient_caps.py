"""Provider metadata and JWKS documents are read up to a cap, counted on the decoded body:
a huge or compressed-bomb answer stops there (never read whole into memory)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

import pytest

pytest.importorskip("authlib", reason="the portal extra is not installed: pip install -e '.[portal]'")

from authz_kit import DocServer, Route
from codemode_portal._oauthclient import MAX_METADATA_BYTES, ProviderError, discover, fetch_json

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def docs() -> Iterator[DocServer]:
    server = DocServer()
    try:
        yield server
    finally:
        server.close()


def _big() -> bytes:
    return json.dumps({"keys": ["x" * 1000] * (2 * MAX_METADATA_BYTES // 1000)}).encode()


async def test_an_oversized_document_is_refused_whether_announced_chunked_or_compressed(docs: DocServer) -> None:
    docs.routes["/length"] = Route(200, _big(), JSON)
    docs.routes["/chunked"] = Route(200, _big(), JSON, chunked=True)
    bomb = gzip.compress(b'{"keys": "' + b"0" * (50 * MAX_METADATA_BYTES) + b'"}')
    assert len(bomb) < MAX_METADATA_BYTES // 10  # small on the wire, 12 MB decoded
    docs.routes["/bomb"] = Route(200, bomb, {**JSON, "Content-Encoding": "gzip"}, chunked=True)
    for path in ("/length", "/chunked", "/bomb"):
        with pytest.raises(ProviderError, match=f"sent more than {MAX_METADATA_BYTES} bytes"):
            await fetch_json(docs.base + path)


async def test_a_small_document_is_read_and_bad_ones_are_named(docs: DocServer) -> None:
    docs.routes["/ok"] = Route(200, b'{"keys": []}', {**JSON, "Content-Encoding": "gzip"})
    docs.routes["/ok"].body = gzip.compress(b'{"keys": []}')
    docs.routes["/list"] = Route(200, b"[1, 2]", JSON)
    docs.routes["/gone"] = Route(404, b"no", {})
    assert await fetch_json(docs.base + "/ok") == {"keys": []}
    with pytest.raises(ProviderError, match="did not answer with a JSON object"):
        await fetch_json(docs.base + "/list")
    with pytest.raises(ProviderError, match="answered HTTP 404"):
        await fetch_json(docs.base + "/gone")


async def test_discovery_skips_an_oversized_answer_for_the_next_url(docs: DocServer) -> None:
    docs.routes["/big"] = Route(200, _big(), JSON, chunked=True)
    docs.routes["/meta"] = Route(200, b'{"issuer": "https://id.example"}', JSON)
    assert await discover((docs.base + "/big", docs.base + "/meta")) == {"issuer": "https://id.example"}
    assert await discover((docs.base + "/big",)) is None


async def test_a_dripping_or_absurdly_nested_document_is_a_provider_error(
    docs: DocServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from codemode_portal import _oauthclient

    monkeypatch.setattr(_oauthclient, "PROVIDER_TIMEOUT_SECONDS", 1.0)  # the whole exchange, not each read
    docs.routes["/drip"] = Route(200, b'{"keys": []}' + b" " * 400, JSON, drip=0.1)  # 26 chunks: 2.6 s
    docs.routes["/deep"] = Route(200, b"[" * 200_000, JSON)
    for path, why in (("/drip", "ReadTimeout"), ("/deep", "ValueError")):
        with pytest.raises(ProviderError, match=why):
            await fetch_json(docs.base + path)
        assert await discover((docs.base + path,)) is None
