"""``codemode install``: Claude Desktop's config merged safely, the other clients printed, and the command
that was written really starts a server that answers ``initialize`` over stdio."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
from pathlib import Path

import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from codemode._cli import main
from codemode._cli._install import claude_desktop_config_path

ROOT = Path(__file__).resolve().parents[1]
PETSTORE = (ROOT / "specs" / "petstore3-openapi.yaml").resolve()
EXISTING = {
    "globalShortcut": "Ctrl+Space",
    "mcpServers": {"filesystem": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"]}},
}


def test_config_path_is_the_one_claude_desktop_reads_on_each_os() -> None:
    env = {"HOME": "/home/u", "APPDATA": r"C:\Users\u\AppData\Roaming"}
    assert claude_desktop_config_path("darwin", env) == Path(
        "/home/u/Library/Application Support/Claude/claude_desktop_config.json"
    )
    assert claude_desktop_config_path("win32", env) == Path(r"C:\Users\u\AppData\Roaming") / "Claude" / (
        "claude_desktop_config.json"
    )
    assert claude_desktop_config_path("linux", env) == Path("/home/u/.config/Claude/claude_desktop_config.json")
    assert claude_desktop_config_path("linux", {**env, "XDG_CONFIG_HOME": "/x"}) == Path(
        "/x/Claude/claude_desktop_config.json"
    )


async def test_install_merges_backs_up_and_the_written_command_answers_initialize(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "Claude" / "claude_desktop_config.json"
    config.parent.mkdir()
    config.write_text(json.dumps(EXISTING, indent=2))
    monkeypatch.setenv("PETSTORE_TOKEN", "tok-s3cret-value")
    argv = [
        "install", "claude-desktop", str(PETSTORE), "--config", str(config), "--name", "pets", "--read-only",
        "--header", "Authorization: Bearer ${PETSTORE_TOKEN}", "--base-url", "http://127.0.0.1:9/api/v3",
    ]  # fmt: skip
    assert main(argv) == 0
    assert "added 'pets'" in capsys.readouterr().out
    written = json.loads(config.read_text())
    assert written["globalShortcut"] == "Ctrl+Space"
    assert written["mcpServers"]["filesystem"] == EXISTING["mcpServers"]["filesystem"]  # untouched
    entry = written["mcpServers"]["pets"]
    assert Path(entry["command"]).is_absolute() and entry["args"][:2] == ["serve", str(PETSTORE)]
    assert "--read-only" in entry["args"] and "Authorization: Bearer ${PETSTORE_TOKEN}" in entry["args"]
    assert entry["env"] == {"PETSTORE_TOKEN": "tok-s3cret-value"}  # Claude Desktop passes only this env
    assert "tok-s3cret-value" not in json.dumps(entry["args"])
    backups = list(config.parent.glob("claude_desktop_config.json.*.bak"))
    assert len(backups) == 1 and json.loads(backups[0].read_text()) == EXISTING
    if os.name != "nt":
        assert config.stat().st_mode & 0o077 == 0

    # Start exactly what was written, the way Claude Desktop does: its own small environment plus `env`,
    # from a folder that is not the checkout.
    base_env = {k: os.environ[k] for k in ("HOME", "USER", "LOGNAME", "SHELL", "TERM") if k in os.environ}
    params = StdioServerParameters(
        command=entry["command"], args=entry["args"], env={**base_env, "PATH": "/usr/bin:/bin", **entry["env"]},
        cwd=str(tmp_path),
    )  # fmt: skip
    with (tmp_path / "server.log").open("w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            init = await asyncio.wait_for(session.initialize(), 60)
            tools = await asyncio.wait_for(session.list_tools(), 30)
    assert init.server_info.name == "pets"
    assert [t.name for t in tools.tools] == ["search", "execute"]


def test_install_never_replaces_another_server_and_refuses_secrets_in_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "claude_desktop_config.json"
    config.write_text(json.dumps(EXISTING))
    base = ["install", "claude-desktop", str(PETSTORE), "--config", str(config)]
    assert main([*base, "--name", "filesystem"]) == 2
    assert "already has a server named 'filesystem' (it is not a codemode server)" in capsys.readouterr().err
    assert main([*base, "--name", "filesystem", "--replace"]) == 2  # --replace only ever replaces codemode entries
    assert main([*base, "--header", "Authorization: Bearer sk-live-123"]) == 2
    assert "config.secret_in_config" in capsys.readouterr().err
    assert main([*base, "--env", "TOKEN=sk-live-123"]) == 2
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    assert main([*base, "--env", "NOT_SET_ANYWHERE"]) == 2
    assert "NOT_SET_ANYWHERE is not set" in capsys.readouterr().err
    assert json.loads(config.read_text()) == EXISTING and not list(tmp_path.glob("*.bak"))  # nothing written
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    assert main(["install", "claude-desktop", str(PETSTORE), "--config", str(bad)]) == 2
    assert bad.read_text() == "{not json"
    # the same name again: a codemode entry is replaced only with --replace
    assert main([*base, "--name", "pets"]) == 0
    assert main([*base, "--name", "pets", "--read-only"]) == 2
    assert main([*base, "--name", "pets", "--read-only", "--replace"]) == 0
    assert "--read-only" in json.loads(config.read_text())["mcpServers"]["pets"]["args"]


@pytest.mark.parametrize(
    ("client", "reference"),
    [("claude-code", "${GH_TOKEN}"), ("cursor", "${env:GH_TOKEN}"), ("vscode", "${env:GH_TOKEN}")],
)
def test_print_for_other_clients_uses_references_never_values(
    client: str, reference: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GH_TOKEN", "ghp-value-never-printed")
    argv = ["install", "--print", client, str(PETSTORE), "--header", "Authorization: Bearer ${GH_TOKEN}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert reference in out and "ghp-value-never-printed" not in out
    body = shlex.split(out)[4] if client == "claude-code" else out.split("\n", 1)[1]
    parsed = json.loads(body)
    entry = parsed if client == "claude-code" else next(iter(next(iter(parsed.values())).values()))
    assert entry["args"][:2] == ["serve", str(PETSTORE)]
    if client == "vscode":
        assert entry["type"] == "stdio" and "servers" in parsed


def test_install_can_write_a_portal_connect_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.json"
    assert main(["install", "claude-desktop", "--connect", "https://portal.example.com/mcp/github",
                 "--config", str(config)]) == 0  # fmt: skip
    entry = json.loads(config.read_text())["mcpServers"]["github"]
    assert entry["args"][-2:] == ["connect", "https://portal.example.com/mcp/github"]
    assert main(["install", "--print", "json", "--connect", "ftp://x"]) == 2
    assert main(["install", "--print", "json", "--connect", "http://portal.example.com/mcp/github"]) == 2
    assert "must be https://" in capsys.readouterr().err
    assert main(["install", "--print", "json", "--connect", "http://127.0.0.1:8000/mcp/github"]) == 0


def test_install_json_for_claude_desktop_holds_values_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("K_TOKEN", "v-1")
    assert main(["install", "--print", "json", "petstore", "--env", "K_TOKEN"]) == 0
    entry = json.loads(capsys.readouterr().out)["mcpServers"]["petstore"]
    assert entry["env"] == {"K_TOKEN": "v-1"} and entry["command"].endswith(("codemode", sys.executable))


def test_install_writes_through_a_symlinked_config(tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "claude.json"
    real.parent.mkdir()
    real.write_text(json.dumps(EXISTING))
    link = tmp_path / "Claude" / "claude_desktop_config.json"
    link.parent.mkdir()
    link.symlink_to(real)
    assert main(["install", "claude-desktop", str(PETSTORE), "--config", str(link), "--name", "pets"]) == 0
    assert link.is_symlink() and "pets" in json.loads(real.read_text())["mcpServers"]
    assert main(["install", "claude-desktop", str(PETSTORE), "--config", str(link), "--name", " "]) == 2
