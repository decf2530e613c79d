"""The two tools' footprint: ``tools/list`` ≤ 600 tokens and ``initialize`` instructions ≤ 200 on every corpus spec.

Tokens are characters / 4, the estimate every budget here uses (bench/bench_spec.py prints both).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from codemode import load_spec
from codemode._answer import approx_tokens
from codemode._server import CodemodeServer, compact_schema

SHARED = Path(__file__).resolve().parents[2] / "shared" / "specs"
CORPUS = sorted(
    [p for p in SHARED.glob("*.json") if p.name != "index.json"]
    + list(SHARED.glob("*.yaml"))
    + list(SHARED.glob("*.yml"))
    + [
        SHARED / "digitalocean" / "DigitalOcean-public.v2.yaml",
        SHARED / "redocly-openapi-starter" / "openapi.yaml",
        SHARED / "oai-v2.0-petstore-separate" / "spec" / "swagger.json",
    ]
)
TOOLS_LIST_TOKENS = 600
INSTRUCTIONS_TOKENS = 200


class _NoRun:
    def run(self, *a: Any, **k: Any) -> Any:
        raise AssertionError("no code runs here")

    def prepare(self) -> None:
        return None


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/specs is not beside the checkout")
@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
async def test_tools_list_and_instructions_fit(path: Path) -> None:
    server = CodemodeServer(load_spec(str(path)), sandbox=_NoRun(), env={})
    tools = await server.mcp.list_tools()
    text = json.dumps({"tools": [t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in tools]})
    assert approx_tokens(text) <= TOOLS_LIST_TOKENS, approx_tokens(text)
    assert approx_tokens(server.mcp.instructions or "") <= INSTRUCTIONS_TOKENS
    search = next(t for t in tools if t.name == "search")
    names = {"query", "tag", "method", "path_prefix", "detail", "code", "limit"}
    assert set(search.input_schema["properties"]) == names
    assert "title" not in json.dumps(search.input_schema)


def test_compact_schema_keeps_the_meaning() -> None:
    schema = {
        "title": "searchArguments",
        "type": "object",
        "properties": {
            "tag": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None, "title": "Tag"},
            "limit": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}], "default": None},
            "either": {"anyOf": [{"type": "string"}, {"type": "integer"}], "default": None},
            "query": {"type": "string", "default": "", "title": "Query"},
        },
        "required": [],
    }
    assert compact_schema(schema) == {
        "type": "object",
        "properties": {
            "tag": {"type": "string"},
            "limit": {"type": "integer", "minimum": 1},
            "either": {"anyOf": [{"type": "string"}, {"type": "integer"}], "default": None},  # not X | None: kept
            "query": {"type": "string", "default": ""},
        },
        "required": [],
    }


async def test_null_arguments_are_still_accepted() -> None:
    """Clients that send ``null`` for an omitted optional argument keep working."""
    root = Path(__file__).resolve().parents[1]
    server = CodemodeServer(load_spec(str(root / "specs" / "petstore3-openapi.yaml")), sandbox=_NoRun(), env={})
    result = await server.mcp.call_tool("search", {"query": "delete a pet", "tag": None, "limit": None})
    assert "DELETE /pet/{petId}" in str(result)
