"""``codemode portal …``: run the portal, and the operator commands on its database.

    codemode portal [--config portal.toml] [--host H] [--port N] [--public-url URL]   # run
    codemode portal user add NAME [--password-stdin] [--admin]
    codemode portal user passwd NAME | disable NAME | enable NAME | list
    codemode portal clients | tokens | revoke ID | audit [--server NAME] [--since 1h]

Registered on the engine's CLI through the ``codemode.commands`` entry point; the engine never
imports this module.
"""

from __future__ import annotations

import argparse
import getpass
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from codemode._cli._common import Commands, add_command, global_options

from ._config import PortalConfig, load_portal_config
from ._creds_cli import add_credentials_commands, add_oidc_commands
from ._errors import PortalError
from ._store import AuditRow, SqlStore
from ._users import Users

__all__ = ["parse_since", "register"]

DEFAULT_CONFIG = "portal.toml"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def _config_options(*, suppress: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    default: Any = argparse.SUPPRESS if suppress else None
    p.add_argument("--config", default=default, metavar="FILE", help=f"portal.toml (default: ./{DEFAULT_CONFIG})")
    p.add_argument("--database-url", default=default, help="override [portal] database_url")
    return p


def register(commands: Commands) -> None:
    p = add_command(
        commands, "portal", _run, help="the OAuth portal: many servers behind one authorization server",
        description="Without a subcommand: run the portal. Subcommands manage users, clients, tokens, audit.",
    )  # fmt: skip
    p.add_argument("--config", metavar="FILE", help=f"portal.toml (default: ./{DEFAULT_CONFIG})")
    p.add_argument("--database-url", help="override [portal] database_url")
    p.add_argument("--host", help="address to listen on (default from the config: 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default from the config: 8000)")
    p.add_argument("--public-url", help="the issuer and base of every resource URL (behind a TLS proxy)")
    sub = p.add_subparsers(dest="portal_command", metavar="SUBCOMMAND")
    opts = [global_options(suppress=True), _config_options(suppress=True)]

    user = sub.add_parser("user", help="manage portal users", parents=opts)
    user_sub = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    add = user_sub.add_parser("add", help="add a user (asks for the password)", parents=opts)
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.add_argument("--admin", action="store_true", help="an administrator")
    add.set_defaults(portal_handler=_user_add)
    passwd = user_sub.add_parser("passwd", help="set a user's password (signs them out everywhere)", parents=opts)
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true")
    passwd.set_defaults(portal_handler=_user_passwd)
    disable = user_sub.add_parser(
        "disable", parents=opts,
        help="stop a user: no sign-in, every session ended, every grant and token revoked",
    )  # fmt: skip
    disable.add_argument("name")
    disable.set_defaults(portal_handler=_user_disable)
    enable = user_sub.add_parser("enable", help="let a disabled user sign in again", parents=opts)
    enable.add_argument("name")
    enable.set_defaults(portal_handler=_user_enable)
    users = user_sub.add_parser("list", help="list users", parents=opts)
    users.set_defaults(portal_handler=_user_list)

    sub.add_parser("clients", help="list registered clients", parents=opts).set_defaults(portal_handler=_clients)
    add_credentials_commands(sub, opts, _store)
    add_oidc_commands(sub, opts, _store)
    tokens = sub.add_parser("tokens", help="list live grants and their tokens", parents=opts)
    tokens.add_argument("--all", action="store_true", help="revoked grants too")
    tokens.set_defaults(portal_handler=_tokens)
    revoke = sub.add_parser("revoke", help="revoke a grant (and every token of it)", parents=opts)
    revoke.add_argument("id", help="a grant id, as `tokens` lists it")
    revoke.set_defaults(portal_handler=_revoke)
    audit = sub.add_parser("audit", help="show the audit log", parents=opts)
    audit.add_argument("--server", help="only this server's rows")
    audit.add_argument("--since", help="e.g. 30m, 1h, 2d, or an ISO date/time (default: 1d)")
    audit.add_argument("--limit", type=int, default=1000)
    audit.set_defaults(portal_handler=_audit)


def _load(args: argparse.Namespace, **overrides: Any) -> PortalConfig:
    path = Path(args.config or DEFAULT_CONFIG)
    if args.config is None and not path.exists():
        raise PortalError(f"no {DEFAULT_CONFIG} here; pass --config FILE.", code="portal.config.missing")
    if getattr(args, "database_url", None):
        overrides["database_url"] = args.database_url
    return load_portal_config(path, overrides=overrides)


def _store(args: argparse.Namespace) -> tuple[PortalConfig, SqlStore]:
    config = _load(args)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    return config, SqlStore(config.database_url)


def _run(args: argparse.Namespace) -> int:
    handler = getattr(args, "portal_handler", None)
    if handler is not None:
        code: int = handler(args)
        return code
    config = _load(args, host=args.host, port=args.port, public_url=args.public_url)
    from ._app import serve

    serve(config)
    return 0


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise PortalError("the two passwords differ.", code="portal.user.password")
    return first


def _user_add(args: argparse.Namespace) -> int:
    config, store = _store(args)
    try:
        user = Users(store, config.settings).add(args.name, _password(args), is_admin=args.admin)
    finally:
        store.close()
    print(f"added user {user.name} ({'admin' if user.is_admin else 'user'})")
    return 0


def _user_passwd(args: argparse.Namespace) -> int:
    config, store = _store(args)
    try:
        ended = Users(store, config.settings).set_password(args.name, _password(args))
        user = store.find_user(args.name)
        detail = f"by the operator (CLI); {ended} session(s) ended"
        store.record_audit([AuditRow(at=time.time(), event="password_changed", user_id=user.id if user else None,
                                     status="ok", detail=detail)])  # fmt: skip
    finally:
        store.close()
    if user is not None and user.is_admin:
        from ._app import admin_password_path

        admin_password_path(config).unlink(missing_ok=True)  # a first-start password file is stale now
    print(f"password of {args.name} changed; signed out of {ended} session(s)")
    return 0


def _user_disable(args: argparse.Namespace) -> int:
    config, store = _store(args)
    try:
        user, revoked = Users(store, config.settings).set_disabled(args.name, True)
        now = time.time()
        rows = [AuditRow(at=now, event="grant_revoked", user_id=g.user_id, client_id=g.client_id, server=g.server,
                         status="ok", detail="user disabled by the operator (CLI)") for g in revoked]  # fmt: skip
        store.record_audit([*rows, AuditRow(at=now, event="user_disabled", user_id=user.id, status="ok",
                                            detail=f"{len(revoked)} grant(s) revoked")])  # fmt: skip
    finally:
        store.close()
    print(f"user {args.name} disabled; {len(revoked)} grant(s) revoked, every session ended")
    return 0


def _user_enable(args: argparse.Namespace) -> int:
    config, store = _store(args)
    try:
        user, _ = Users(store, config.settings).set_disabled(args.name, False)
        store.record_audit([AuditRow(at=time.time(), event="user_enabled", user_id=user.id, status="ok")])
    finally:
        store.close()
    print(f"user {args.name} enabled (revoked grants stay revoked)")
    return 0


def _user_list(args: argparse.Namespace) -> int:
    _, store = _store(args)
    try:
        for u in store.list_users():
            state = " (disabled)" if u.disabled else ""
            print(f"{u.name}\t{'admin' if u.is_admin else 'user'}{state}\t{_when(u.created_at)}")
    finally:
        store.close()
    return 0


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _clients(args: argparse.Namespace) -> int:
    _, store = _store(args)
    try:
        rows = store.list_clients()
    finally:
        store.close()
    print("CLIENT_ID\tKIND\tNAME\tAUTH\tREDIRECT_URIS\tCREATED")
    for c in rows:
        print(f"{c.client_id}\t{c.kind}\t{c.name}\t{c.auth_method}\t{' '.join(c.redirect_uris)}\t{_when(c.created_at)}")
    return 0


def _tokens(args: argparse.Namespace) -> int:
    _, store = _store(args)
    now = time.time()
    try:
        grants = store.list_grants(active_only=not args.all)
        live = store.list_tokens(active_at=now)
        names = {u.id: u.name for u in store.list_users()}
    finally:
        store.close()
    print("GRANT_ID\tUSER\tCLIENT_ID\tSERVER\tSCOPES\tLIVE_TOKENS\tCREATED\tREVOKED")
    for g in grants:
        counts = [t.kind for t in live if t.grant_id == g.id]
        n = f"{counts.count('access')} access, {counts.count('refresh')} refresh"
        revoked = _when(g.revoked_at) if g.revoked_at else "-"
        print(f"{g.id}\t{names.get(g.user_id, g.user_id)}\t{g.client_id}\t{g.server}\t{' '.join(g.scopes)}\t{n}\t"
              f"{_when(g.created_at)}\t{revoked}")  # fmt: skip
    return 0


def _revoke(args: argparse.Namespace) -> int:
    _, store = _store(args)
    try:
        grant = store.get_grant(args.id)
        if grant is None:
            raise PortalError(
                f"no grant {args.id!r} (`codemode portal tokens` lists them).", code="portal.grant.unknown"
            )
        done = store.revoke_grant(grant.id, time.time())
        if done:
            row = AuditRow(at=time.time(), event="grant_revoked", user_id=grant.user_id, client_id=grant.client_id,
                           server=grant.server, detail="by the operator (CLI)")  # fmt: skip
            store.record_audit([row])
    finally:
        store.close()
    print(f"grant {args.id} revoked" if done else f"grant {args.id} was already revoked")
    return 0


def parse_since(value: str | None, now: float) -> float:
    """``30m``, ``1h``, ``2d``, ``1w`` before ``now``, or an ISO 8601 date/time (UTC if no zone)."""
    if value is None:
        return now - 86_400
    m = _DURATION.match(value.strip().lower())
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        at = datetime.fromisoformat(value.strip())
    except ValueError:
        raise PortalError(f"--since {value!r}: give a duration (30m, 1h, 2d) or an ISO date/time.",
                          code="portal.cli.since") from None  # fmt: skip
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.timestamp()


def _audit(args: argparse.Namespace) -> int:
    since = parse_since(args.since, time.time())
    _, store = _store(args)
    try:
        rows = store.list_audit(since=since, server=args.server, limit=args.limit)
    finally:
        store.close()
    print("TIME\tEVENT\tUSER\tCLIENT\tSERVER\tOPERATION\tSTATUS\tDETAIL")
    for r in rows:
        cells = (r.user_id, r.client_id, r.server, r.operation, r.status, r.detail)
        print(f"{_when(r.at)}\t{r.event}\t" + "\t".join(c or "-" for c in cells))
    return 0
