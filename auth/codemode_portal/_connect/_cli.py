"""``codemode connect URL``: a stdio MCP server that forwards to a server of the OAuth portal.

    codemode connect https://portal.example.com/mcp/github            # the bridge (for Claude Desktop…)
    codemode connect https://portal.example.com/mcp/github --login    # sign in now, then exit
    codemode connect https://portal.example.com/mcp/github --logout   # revoke the grant, delete the tokens

Registered on the engine's CLI through the ``codemode.commands`` entry point.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import anyio
from pydantic import ValidationError

from codemode._cli._common import Commands, add_command

from ._errors import ConnectUsageError
from ._run import ConnectSettings, bridge, login, logout

__all__ = ["register"]

EXAMPLES = """\
  codemode connect https://portal.example.com/mcp/github
  codemode connect https://portal.example.com/mcp/github --login --no-browser
  codemode connect https://portal.example.com/mcp/github \\
      --client-metadata-url https://example.com/codemode-client.json --callback-port 33418
  codemode connect https://portal.example.com/mcp/github --logout
"""


def register(commands: Commands) -> None:
    p = add_command(
        commands, "connect", _run,
        help="a stdio MCP server forwarding to a portal server (signs in with OAuth in the browser)",
        description="Forwards MCP over stdio to https://HOST/mcp/NAME of a codemode portal. On the first use it "
        "opens the portal's sign-in and consent page in the browser; tokens are kept in a private file under "
        "your configuration folder and refreshed as needed.",
        epilog="examples:\n" + EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("url", help="the server's URL on the portal, https://HOST/mcp/NAME")
    action = p.add_mutually_exclusive_group()
    action.add_argument("--login", action="store_true", help="sign in now (if needed), store the token, and exit")
    action.add_argument("--logout", action="store_true", help="revoke the stored grant at the portal and delete it")
    p.add_argument("--no-browser", action="store_true", help="print the sign-in address instead of opening it")
    p.add_argument(
        "--client-metadata-url",
        metavar="URL",
        help="register as this Client ID Metadata Document (https) instead of dynamic registration",
    )
    p.add_argument(
        "--callback-port",
        type=int,
        metavar="PORT",
        help="the redirect port, http://127.0.0.1:PORT/callback (needed with --client-metadata-url)",
    )
    p.add_argument("--token-dir", type=Path, metavar="DIR", help="where token files live (default: config folder)")
    p.add_argument("--client-name", help="the name the consent page shows (default: codemode connect)")
    p.add_argument("--auth-timeout", type=float, metavar="S", help="seconds to complete a sign-in (default 300)")


def _settings(args: argparse.Namespace) -> ConnectSettings:
    values = {
        "url": args.url, "client_metadata_url": args.client_metadata_url, "callback_port": args.callback_port,
        "open_browser": not args.no_browser, "token_dir": args.token_dir, "client_name": args.client_name,
        "authorization_timeout": args.auth_timeout,
    }  # fmt: skip
    try:
        return ConnectSettings(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "options"
        flag = "--" + where.replace("_", "-") if where not in ("url", "options") else where
        message = first["msg"].removeprefix("Value error, ")
        raise ConnectUsageError(f"{flag}: {message}", code="connect.usage") from None


def _run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.logout:
        deleted, revoked = anyio.run(logout, settings)
        where = settings.token_file.path
        if not deleted:
            print(f"no stored sign-in for {settings.url} ({where} does not exist)")
        else:
            print(f"signed out of {settings.url}: deleted {where}; "
                  + ("the portal revoked the grant" if revoked else "the portal could not be told (revoke the grant "
                     "on its account page)"))  # fmt: skip
        return 0
    if args.login:
        name = anyio.run(login, settings)
        print(f"signed in: {settings.url} ({name}); the token is in {settings.token_file.path}")
        return 0
    anyio.run(bridge, settings)
    return 0
