"""portal.toml: validated settings; one line naming the key and its line for a bad [portal];
a bad [servers.<name>] entry fails that server alone."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")

from codemode_portal import PortalConfigError, load_portal_config

ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
# a comment
[portal]
public_url = "https://mcp.example.com/"
database_url = "sqlite:////tmp/x.db"

[servers.petstore]
spec = "specs/petstore3-openapi.yaml"
base_url = "https://petstore3.swagger.io/api/v3"
read_only = true

[servers.kinto]
config = "servers/kinto.toml"
credentials = { basicAuth = "KINTO_LOGIN" }

[servers.kinto.scopes.records]
description = "Records"
operations = ["records.*"]
"""


def test_a_good_config(tmp_path: Path) -> None:
    path = tmp_path / "portal.toml"
    path.write_text(GOOD)
    cfg = load_portal_config(path)
    assert cfg.settings.issuer == "https://mcp.example.com"  # trailing slash dropped
    assert cfg.settings.resource_url("petstore") == "https://mcp.example.com/mcp/petstore"
    assert cfg.settings.resource_url("petstore", "sse") == "https://mcp.example.com/sse/petstore"
    assert set(cfg.servers) == {"petstore", "kinto"} and cfg.failed == {}
    assert cfg.servers["petstore"].read_only is True
    assert cfg.servers["kinto"].scopes["records"].operations == ("records.*",)
    assert cfg.resolve("specs/x.yaml") == str(tmp_path / "specs" / "x.yaml")
    assert cfg.resolve("https://h/spec.json") == "https://h/spec.json"
    assert cfg.database_url == "sqlite:////tmp/x.db"


def test_defaults_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "portal.toml"
    path.write_text("[portal]\nport = 9000\n")
    cfg = load_portal_config(path)
    assert cfg.settings.issuer == "http://127.0.0.1:9000"
    assert cfg.database_url == f"sqlite:///{tmp_path / '.codemode-portal' / 'portal.db'}"
    cfg = load_portal_config(path, overrides={"host": "0.0.0.0", "port": 8123, "public_url": None})
    assert cfg.settings.issuer == "http://127.0.0.1:8123"  # a wildcard bind is reached on loopback
    cfg = load_portal_config(path, overrides={"public_url": "https://proxy.example/portal"})
    assert cfg.settings.resource_url("a") == "https://proxy.example/portal/mcp/a"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[portal]\nport = 'x'\n", "portal.toml:2: portal.port: Input should be a valid integer"),
        (
            "[portal]\nhost = '1'\n\naccess_token_seconds = 5\n",
            "portal.toml:4: portal.access_token_seconds: Input should be greater than or equal to 30",
        ),
        ("[portal]\nfrobnicate = 1\n", "portal.toml:2: portal.frobnicate: Extra inputs are not permitted"),
        ("[portal]\npublic_url = 'http://mcp.example.com'\n", "portal.toml:2: portal.public_url: must be https://"),
        ("[portal]\npublic_url = 'https://x/?a=1'\n", "portal.toml:2: portal.public_url: must not have a query"),
        ("[portal\nport = 1\n", "portal.toml: not valid TOML: "),
        ("[portal]\n[extra]\n", "portal.toml:2: extra: unknown table"),
    ],
)
def test_a_bad_portal_table_is_one_line_naming_key_and_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "portal.toml"
    path.write_text(text)
    with pytest.raises(PortalConfigError) as info:
        load_portal_config(path)
    message = info.value.message
    assert "\n" not in message
    assert message.replace(str(tmp_path) + "/", "").startswith(expected)


def test_a_bad_server_entry_fails_that_server_alone(tmp_path: Path) -> None:
    path = tmp_path / "portal.toml"
    path.write_text(
        "[servers.good]\nspec = 'a.yaml'\n\n"
        "[servers.nospec]\nbase_url = 'https://x'\n\n"
        "[servers.both]\nspec = 'a'\nconfig = 'b'\n\n"
        "[servers.typo]\nspec = 'a'\nmax_callz = 3\n\n"
        "[servers.badscope]\nspec = 'a'\n[servers.badscope.scopes.write]\ntags = ['x']\n\n"
        "[servers.emptyscope]\nspec = 'a'\n[servers.emptyscope.scopes.x]\ndescription = 'nothing'\n\n"
        "[servers.badvar]\nspec = 'a'\ncredentials = { k = 'not a var' }\n\n"
        "[servers.BadName]\nspec = 'a'\n"
    )
    cfg = load_portal_config(path)
    assert set(cfg.servers) == {"good"}
    failed = {k: v.replace(str(tmp_path) + "/", "") for k, v in cfg.failed.items()}
    assert failed["nospec"].startswith("portal.toml:4: servers.nospec: give exactly one of spec")
    assert failed["both"].startswith("portal.toml:7: servers.both: give exactly one")
    assert failed["typo"] == "portal.toml:13: servers.typo.max_callz: Extra inputs are not permitted"
    assert "scope name 'write' is not allowed" in failed["badscope"]
    assert failed["emptyscope"].startswith(
        "portal.toml:22: servers.emptyscope.scopes.x: a scope needs tags or operations"
    )
    assert "'not a var' is not a variable name" in failed["badvar"]
    assert failed["BadName"].startswith("portal.toml:29: servers.BadName: a server name is")


def test_missing_file_and_no_file(tmp_path: Path) -> None:
    with pytest.raises(PortalConfigError, match="file not found"):
        load_portal_config(tmp_path / "nope.toml")
    with pytest.raises(PortalConfigError, match="--config"):
        load_portal_config(None)


def test_the_bundled_portal_toml_is_valid() -> None:
    cfg = load_portal_config(ROOT / "portal.toml")
    assert cfg.failed == {}
    assert "petstore" in cfg.servers


def test_every_hosted_server_shares_one_execution_limiter(tmp_path: Path) -> None:
    """The limit on concurrent executions, the memory budget and the fair share hold portal-wide."""
    from codemode_portal import MemoryStore
    from codemode_portal._audit import AuditLog
    from codemode_portal._hosting import build_servers

    from codemode._sandbox import LocalSandbox

    spec = ROOT / "specs" / "petstore3-openapi.yaml"
    text = f'[portal]\nport = 9000\n\n[servers.one]\nspec = "{spec}"\n\n[servers.two]\nspec = "{spec}"\n'
    (tmp_path / "portal.toml").write_text(text)
    cfg = load_portal_config(tmp_path / "portal.toml")
    hosted = build_servers(cfg, audit=AuditLog(MemoryStore()), sandbox=LocalSandbox(), env={})
    one, two = hosted["one"].server, hosted["two"].server
    assert one is not None and two is not None
    assert one.limiter is two.limiter
