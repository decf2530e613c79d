"""``codemode install``: put a codemode server into an MCP client's configuration.

``codemode install claude-desktop SPEC`` merges an entry into Claude Desktop's
``claude_desktop_config.json`` (the right path for the OS, or ``--config``): it backs the
file up first, never replaces another server's entry, and never writes a secret into the
entry's arguments: ``--header`` values name environment variables (``${VAR}``), and
``--env VAR`` copies the variable into the entry's ``env`` (Claude Desktop starts servers
with almost no environment and expands no references, so that is where it must be).

``codemode install --print claude-code|cursor|vscode|json|claude-desktop SPEC`` prints the
equivalent for the other clients; those that expand environment references get
references (``${VAR}``, ``${env:VAR}``), never values.

``--connect URL`` writes ``codemode connect URL`` (a stdio bridge to a server of the OAuth
portal) instead of a local ``codemode serve``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .._errors import ConfigError, UsageError
from .._paths import atomic_write
from ._common import Commands, add_command, spec_arg

__all__ = ["CLIENTS", "ServerEntry", "claude_desktop_config_path", "merge_entry", "register", "render_for"]

CLIENTS = ("claude-desktop", "claude-code", "cursor", "vscode", "json")
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# How each client spells "the value of environment variable NAME" in its config (None: it cannot).
ENV_REFERENCE: dict[str, str | None] = {
    "claude-desktop": None,
    "json": None,
    "claude-code": "${{{}}}",
    "cursor": "${{env:{}}}",
    "vscode": "${{env:{}}}",
}

EXAMPLES = """\
  codemode install claude-desktop petstore3-openapi.yaml --read-only
  codemode install claude-desktop github.json --name github \\
      --header 'Authorization: Bearer ${GITHUB_TOKEN}' --env GITHUB_TOKEN
  codemode install claude-desktop https://example.com/openapi.json --base-url https://api.example.com
  codemode install claude-desktop --connect https://portal.example.com/mcp/github
  codemode install --print claude-code github.json --env GITHUB_TOKEN
  codemode install --print vscode kinto            # a bundled server config
"""


def register(commands: Commands) -> None:
    p = add_command(
        commands, "install", run, help="add a codemode server to Claude Desktop, or print it for another client",
        examples=EXAMPLES,
    )  # fmt: skip
    p.add_argument("client", choices=CLIENTS, help="the MCP client")
    p.add_argument("target", nargs="?", help="spec file, folder or URL, a servers/*.toml config, or a bundled name")
    p.add_argument("--print", action="store_true", dest="print_only", help="print the entry instead of writing it")
    p.add_argument(
        "--connect", metavar="URL", help="a portal server (https://…/mcp/NAME): write `codemode connect URL`"
    )
    p.add_argument("--name", help="the entry's name in the client (default: from the spec)")
    p.add_argument("--config", type=Path, metavar="PATH", help="the client's config file (default: the OS's)")
    p.add_argument("--replace", action="store_true", help="replace an existing codemode entry of the same name")
    p.add_argument(
        "--env", action="append", default=[], metavar="VAR",
        help="an environment variable the server needs (repeatable); its value is taken from your environment",
    )  # fmt: skip
    p.add_argument("--read-only", action="store_true", help="only GET/HEAD/OPTIONS operations are callable")
    p.add_argument("--base-url", metavar="URL", help="upstream base URL, overriding the spec's servers")
    p.add_argument(
        "--header", action="append", default=[], metavar="'Name: ${VAR}'",
        help="static upstream header; its value must name an environment variable as ${VAR} (repeatable)",
    )  # fmt: skip
    p.add_argument("--allow", action="append", default=[], metavar="PATTERN", help="only these operations")
    p.add_argument("--deny", action="append", default=[], metavar="PATTERN", help="never these operations")
    p.add_argument("--credential-param", action="append", default=[], metavar="NAME",
                   help="a parameter that carries a credential (hidden from the model)")  # fmt: skip


@dataclass
class ServerEntry:
    """One MCP server entry: a command, its arguments, and the environment variables it needs."""

    name: str
    command: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)  # variable -> value (taken from the environment)

    def for_client(self, client: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"command": self.command, "args": list(self.args)}
        reference = ENV_REFERENCE[client]
        if self.env:
            entry["env"] = {k: (reference.format(k) if reference else v) for k, v in self.env.items()}
        if client == "vscode":
            entry = {"type": "stdio", **entry}
        return entry


def claude_desktop_config_path(platform: str | None = None, env: dict[str, str] | None = None) -> Path:
    """Where Claude Desktop reads its servers on this OS."""
    platform = platform or sys.platform
    env = dict(os.environ) if env is None else env
    home = Path(env.get("HOME") or env.get("USERPROFILE") or Path.home())
    if platform == "darwin":
        return home / "Library" / "Application Support" / "Claude" / "claude_desktop_config.json"
    if platform.startswith("win"):
        appdata = env.get("APPDATA")
        base = Path(appdata) if appdata else home / "AppData" / "Roaming"
        return base / "Claude" / "claude_desktop_config.json"
    xdg = env.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else home / ".config") / "Claude" / "claude_desktop_config.json"


def _executable() -> list[str]:
    """An absolute command that starts this codemode (clients start servers with a minimal PATH)."""
    beside = Path(sys.executable).with_name("codemode.exe" if os.name == "nt" else "codemode")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("codemode")
    if found:
        return [str(Path(found).resolve())]
    return [sys.executable, "-m", "codemode"]


def _check_header(raw: str) -> str:
    name, sep, value = raw.partition(":")
    if not sep or not name.strip():
        raise UsageError(f"--header {raw!r} is not 'Name: value'.", code="config.bad_header")
    if not _REFERENCE.search(value):
        raise UsageError(
            f"--header {name.strip()}: the value would be written into the client's config as it is. Put it in an "
            f"environment variable and refer to it instead, e.g. --header '{name.strip()}: Bearer ${{TOKEN}}' "
            "--env TOKEN.",
            code="config.secret_in_config",
        )
    return f"{name.strip()}: {value.strip()}"


def _env_values(names: list[str], headers: list[str], environ: dict[str, str]) -> dict[str, str]:
    wanted = list(dict.fromkeys([*names, *(m for h in headers for m in _REFERENCE.findall(h))]))
    out: dict[str, str] = {}
    for name in wanted:
        if "=" in name:
            raise UsageError(
                f"--env {name.split('=', 1)[0]}=…: give the variable's name only; its value is read from your "
                "environment, so it is never typed on a command line.",
                code="config.secret_in_config",
            )
        if not _VAR_NAME.match(name):
            raise UsageError(f"--env {name!r} is not an environment variable name.", code="config.bad_env")
        if name not in environ:
            raise UsageError(
                f"environment variable {name} is not set here; export it, then run codemode install again.",
                code="config.missing_env",
            )
        out[name] = environ[name]
    return out


def _entry_name(name: str | None) -> str | None:
    if name is None:
        return None
    if not name.strip() or any(c in name for c in "\r\n\t\0"):
        raise UsageError(f"--name {name!r} is not a usable server name.", code="usage.bad_name")
    return name.strip()


def _default_name(target: str) -> str:
    from .._cache import load_spec
    from .._server import server_name

    if target.endswith(".toml"):
        return Path(target).stem
    return server_name(load_spec(target).title)  # also checks that the spec loads before anything is written


def build_entry(args: argparse.Namespace, environ: dict[str, str] | None = None) -> ServerEntry:
    environ = dict(os.environ) if environ is None else environ
    command = _executable()
    if args.connect:
        if not args.connect.startswith(("https://", "http://")):
            raise UsageError(f"--connect {args.connect!r} is not an http(s) URL.", code="config.bad_url")
        if args.connect.startswith("http://") and urlsplit(args.connect).hostname not in (
            "127.0.0.1",
            "localhost",
            "::1",
        ):
            raise UsageError(
                f"--connect {args.connect!r}: a portal elsewhere must be https:// (codemode connect refuses to send "
                "tokens in clear; plain http only to this machine).",
                code="config.bad_url",
            )
        if args.target:
            raise UsageError("give either a spec or --connect URL, not both.", code="usage.conflict")
        name = _entry_name(args.name) or args.connect.rstrip("/").rsplit("/", 1)[-1] or "codemode"
        env = _env_values(args.env, [], environ)
        return ServerEntry(name, command[0], [*command[1:], "connect", args.connect], env)
    if not args.target:
        raise UsageError("name a spec (file, folder, URL or bundled name) or give --connect URL.", code="usage.no_spec")
    target = spec_arg(args.target)
    if not target.startswith(("http://", "https://")):
        path = Path(target)
        if not path.exists():
            raise UsageError(f"spec not found: {args.target} does not exist.", code="spec.not_found")
        target = str(path.resolve())
    if args.base_url and "@" in args.base_url.split("//", 1)[-1].split("/", 1)[0]:
        raise UsageError("--base-url must not carry a user name or password; use --header with ${VAR}.",
                         code="config.secret_in_config")  # fmt: skip
    headers = [_check_header(h) for h in args.header]
    name = _entry_name(args.name) or _default_name(target)
    flags: list[str] = ["--name", name]
    if args.read_only:
        flags.append("--read-only")
    if args.base_url:
        flags += ["--base-url", args.base_url]
    for header in headers:
        flags += ["--header", header]
    for pattern in args.allow:
        flags += ["--allow", pattern]
    for pattern in args.deny:
        flags += ["--deny", pattern]
    for param in args.credential_param:
        flags += ["--credential-param", param]
    env = _env_values(args.env, headers, environ)
    return ServerEntry(name, command[0], [*command[1:], "serve", target, *flags], env)


def merge_entry(config_path: Path, entry: ServerEntry, *, replace: bool = False) -> Path | None:
    """Add ``entry`` to a Claude Desktop config; returns the backup's path (None when there was no file).

    Never replaces another server: an entry of the same name is only replaced with ``replace``
    and only when it is itself a codemode entry.
    """
    data: dict[str, Any] = {}
    backup: Path | None = None
    config_path = config_path.expanduser()
    if config_path.is_symlink():  # a config kept elsewhere and linked: write where it lives
        config_path = config_path.resolve()
    if config_path.is_dir():
        raise ConfigError(f"{config_path} is a folder, not a config file; nothing was changed.", code="config.parse")
    if config_path.exists():
        text = config_path.read_text(encoding="utf-8")
        try:
            loaded = json.loads(text) if text.strip() else {}
        except ValueError as exc:
            raise ConfigError(
                f"{config_path} is not valid JSON ({exc}); fix or move it, nothing was changed.",
                code="config.parse",
            ) from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{config_path} does not hold a JSON object; nothing was changed.", code="config.parse")
        data = loaded
    servers = data.setdefault("mcpServers", {})
    if not isinstance(servers, dict):
        raise ConfigError(f"{config_path}: mcpServers is not an object; nothing was changed.", code="config.parse")
    new = entry.for_client("claude-desktop")
    existing = servers.get(entry.name)
    if existing is not None and existing != new:
        ours = isinstance(existing, dict) and Path(str(existing.get("command", ""))).name.startswith("codemode")
        if not (replace and ours):
            why = "" if ours else " (it is not a codemode server)"
            raise ConfigError(
                f"{config_path} already has a server named {entry.name!r}{why}; choose another with --name"
                + (" or pass --replace." if ours else "."),
                code="config.name_taken",
            )
    servers[entry.name] = new
    config_path.parent.mkdir(parents=True, exist_ok=True)
    if config_path.exists():
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        backup = config_path.with_name(f"{config_path.name}.{stamp}.bak")
        n = 1
        while backup.exists():
            n += 1
            backup = config_path.with_name(f"{config_path.name}.{stamp}-{n}.bak")
        shutil.copy2(config_path, backup)
    # whole or not at all, mode 0600 (the env block may hold a token)
    atomic_write(config_path, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode(), fsync=True)
    return backup


def render_for(client: str, entry: ServerEntry) -> str:
    """The entry as the given client wants it, with how to add it."""
    body = entry.for_client(client)
    if client == "claude-code":
        blob = json.dumps(body, ensure_ascii=False)
        return f"claude mcp add-json {shlex.quote(entry.name)} {shlex.quote(blob)}"
    if client == "vscode":
        doc = {"servers": {entry.name: body}}
        return "# .vscode/mcp.json (or your user mcp.json)\n" + json.dumps(doc, indent=2, ensure_ascii=False)
    doc = {"mcpServers": {entry.name: body}}
    where = {
        "cursor": "# ~/.cursor/mcp.json (or .cursor/mcp.json in a project)\n",
        "claude-desktop": f"# {claude_desktop_config_path()}\n",
    }.get(client, "")
    return where + json.dumps(doc, indent=2, ensure_ascii=False)


def run(args: argparse.Namespace) -> int:
    entry = build_entry(args)
    if args.print_only or args.client != "claude-desktop":
        print(render_for(args.client, entry))
        return 0
    path = args.config or claude_desktop_config_path()
    backup = merge_entry(path, entry, replace=args.replace)
    print(f"added {entry.name!r} to {path}" + (f" (backup: {backup.name})" if backup else ""))
    print("restart Claude Desktop (quit it fully), then ask it to search this server's API.")
    if "serve" in entry.args:
        target = entry.args[entry.args.index("serve") + 1]
        check = [entry.command, *entry.args[: entry.args.index("serve")], "search", target, "list"]
        print("check the spec from a shell: " + " ".join(shlex.quote(a) for a in check))
    return 0
