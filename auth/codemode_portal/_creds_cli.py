"""``codemode portal credentials …``: users' own upstream credentials and the key that seals them;
``codemode portal oidc …``: which OpenID Connect subjects sign in as which portal users.

codemode portal credentials list                 # who has which credential (never a secret)
codemode portal credentials delete USER SERVER   # remove one (the user adds or links it again)
codemode portal credentials new-key              # print a fresh key (for CODEMODE_PORTAL_CREDENTIAL_KEYS)
codemode portal credentials rotate-key           # key file: a new key first (the old ones still open)
codemode portal credentials reseal               # re-seal every row under the current (first) key
codemode portal credentials drop-old-keys        # key file: keep only the current key (after reseal)
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from ._box import ENV_KEYS, SecretBox, drop_old_keys, generate_key, load_box, rotate_key_file
from ._config import PortalConfig
from ._crypto import new_id
from ._errors import PortalError, StoreConflict
from ._oidc import OIDC_PASSWORD_HASH
from ._store import AuditRow, ExternalIdentity, SqlStore, Store, UpstreamCredential, User
from ._upstream_sources import seal_context
from ._users import USER_NAME

__all__ = ["add_credentials_commands", "add_oidc_commands", "reseal_all"]

StoreOpener = Callable[[argparse.Namespace], tuple[PortalConfig, SqlStore]]


def add_credentials_commands(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    parents: list[argparse.ArgumentParser],
    open_store: StoreOpener,
) -> None:
    creds = sub.add_parser("credentials", help="users' own upstream credentials and their sealing key",
                           parents=parents)  # fmt: skip
    actions = creds.add_subparsers(dest="credentials_command", metavar="ACTION", required=True)

    def handler(fn: Callable[[argparse.Namespace, StoreOpener], int]) -> Callable[[argparse.Namespace], int]:
        return lambda args: fn(args, open_store)

    actions.add_parser("list", help="list stored credentials (never their values)", parents=parents).set_defaults(
        portal_handler=handler(_list)
    )
    delete = actions.add_parser("delete", help="delete a user's credential for a server", parents=parents)
    delete.add_argument("user", help="the portal user name")
    delete.add_argument("server")
    delete.set_defaults(portal_handler=handler(_delete))
    actions.add_parser("new-key", help="print a new sealing key", parents=parents).set_defaults(
        portal_handler=lambda args: _new_key()
    )
    actions.add_parser("rotate-key", help="key file: put a new key first (old ones kept for reading)",
                       parents=parents).set_defaults(portal_handler=handler(_rotate))  # fmt: skip
    actions.add_parser("reseal", help="re-seal every credential under the current key", parents=parents).set_defaults(
        portal_handler=handler(_reseal)
    )
    actions.add_parser("drop-old-keys", help="key file: keep only the current key", parents=parents).set_defaults(
        portal_handler=handler(_drop_old)
    )


def _when(at: float | None) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S") if at else "-"


def _list(args: argparse.Namespace, open_store: StoreOpener) -> int:
    _, store = open_store(args)
    try:
        rows = store.list_upstream_credentials()
        names = {u.id: u.name for u in store.list_users()}
    finally:
        store.close()
    print("USER\tSERVER\tKIND\tSCHEME\tSTATUS\tSCOPES\tEXPIRES\tUPDATED")
    for c in rows:
        print(f"{names.get(c.user_id, c.user_id)}\t{c.server}\t{c.kind}\t{c.scheme}\t{c.status}\t"
              f"{' '.join(c.scopes) or '-'}\t{_when(c.expires_at)}\t{_when(c.updated_at)}")  # fmt: skip
    return 0


def _delete(args: argparse.Namespace, open_store: StoreOpener) -> int:
    _, store = open_store(args)
    try:
        user = store.find_user(args.user)
        if user is None:
            raise PortalError(f"no user named {args.user!r}.", code="portal.user.unknown")
        gone = store.delete_upstream_credential(user.id, args.server)
        if gone is not None:
            detail = f"{gone.kind}: by the operator (CLI), not revoked upstream"
            row = AuditRow(at=time.time(), event="upstream_unlinked", user_id=user.id, server=args.server,
                           status="ok", detail=detail)  # fmt: skip
            store.record_audit([row])
    finally:
        store.close()
    print(f"deleted {args.user}'s credential for {args.server}" if gone else
          f"{args.user} has no credential for {args.server}")  # fmt: skip
    return 0


def _new_key() -> int:
    print(generate_key())
    return 0


def reseal_all(store: Store, box: SecretBox) -> tuple[int, int]:
    """Re-seal every credential not sealed under ``box``'s current key. Returns (resealed, unreadable)."""
    done = unreadable = 0
    for cred in store.list_upstream_credentials():
        try:
            secret = box.reseal(cred.secret, context=seal_context(cred.user_id, cred.server, "secret"))
            refresh = (box.reseal(cred.refresh, context=seal_context(cred.user_id, cred.server, "refresh"))
                       if cred.refresh else None)  # fmt: skip
        except PortalError:
            unreadable += 1
            continue
        if secret is None and refresh is None:
            continue
        new: UpstreamCredential = replace(
            cred, secret=secret or cred.secret, refresh=refresh or cred.refresh, version=cred.version + 1,
            updated_at=time.time(),
        )  # fmt: skip
        if store.swap_upstream_credential(new, cred.version):  # a concurrent refresh re-sealed it already
            done += 1
    return done, unreadable


def _box(config: PortalConfig) -> SecretBox:
    return load_box(config.data_dir, os.environ, create=False)


def _report(done: int, unreadable: int, box: SecretBox) -> None:
    print(f"re-sealed {done} credential(s) under key {box.current}")
    if unreadable:
        print(f"{unreadable} credential(s) could not be opened with the configured keys (left as they are)")


def _reseal(args: argparse.Namespace, open_store: StoreOpener) -> int:
    config, store = open_store(args)
    try:
        box = _box(config)
        done, unreadable = reseal_all(store, box)
    finally:
        store.close()
    _report(done, unreadable, box)
    return 1 if unreadable else 0


def _rotate(args: argparse.Namespace, open_store: StoreOpener) -> int:
    """Put a new key first in the key file, keeping the old ones for reading. Nothing is re-sealed yet:
    a portal still running with the old keys could not read rows sealed under the new one."""
    if ENV_KEYS in os.environ:
        raise PortalError(
            f"the keys come from {ENV_KEYS}: put a new key (`credentials new-key`) first in it, restart every "
            "replica, then run `credentials reseal`.", code="portal.credentials.rotate",
        )  # fmt: skip
    config, store = open_store(args)
    store.close()
    _box(config)  # the current file must be sound before it is rewritten
    new_id, kept = rotate_key_file(config.data_dir)
    print(f"new key {new_id} is first in {config.data_dir}; old key(s) kept for reading: {', '.join(kept)}")
    print("next: restart the portal (it seals with the new key from then on), run "
          "`codemode portal credentials reseal`, then `codemode portal credentials drop-old-keys`.")  # fmt: skip
    return 0


def _drop_old(args: argparse.Namespace, open_store: StoreOpener) -> int:
    config, store = open_store(args)
    try:
        box = _box(config)
        stale = [c for c in store.list_upstream_credentials() if box.key_of(c.secret) != box.current
                 or (c.refresh is not None and box.key_of(c.refresh) != box.current)]  # fmt: skip
    finally:
        store.close()
    if stale:
        raise PortalError(f"{len(stale)} credential(s) are still sealed under an old key: run "
                          "`codemode portal credentials reseal` first.", code="portal.credentials.stale")  # fmt: skip
    print(f"dropped old key(s): {', '.join(drop_old_keys(config.data_dir)) or 'none'}")
    return 0


def add_oidc_commands(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    parents: list[argparse.ArgumentParser],
    open_store: StoreOpener,
) -> None:
    oidc = sub.add_parser("oidc", help="portal users known to the OpenID Connect provider ([portal.oidc])",
                          parents=parents)  # fmt: skip
    actions = oidc.add_subparsers(dest="oidc_command", metavar="ACTION", required=True)
    actions.add_parser("list", help="list who is linked to which provider subject", parents=parents).set_defaults(
        portal_handler=lambda args: _oidc_list(args, open_store)
    )
    link = actions.add_parser("link", help="let the provider's SUBJECT sign in as portal user NAME", parents=parents)
    link.add_argument("name", help="the portal user (created without a password if missing)")
    link.add_argument("subject", help="the provider's `sub` for that person")
    link.add_argument("--issuer", help="default: [portal.oidc] issuer")
    link.set_defaults(portal_handler=lambda args: _oidc_link(args, open_store))
    unlink = actions.add_parser("unlink", help="forget a provider subject", parents=parents)
    unlink.add_argument("subject")
    unlink.add_argument("--issuer", help="default: [portal.oidc] issuer")
    unlink.set_defaults(portal_handler=lambda args: _oidc_unlink(args, open_store))


def _issuer(args: argparse.Namespace, config: PortalConfig) -> str:
    if args.issuer:
        return str(args.issuer)
    if config.settings.oidc is None:
        raise PortalError("no [portal.oidc] in the config: give --issuer.", code="portal.oidc.issuer")
    return config.settings.oidc.issuer


def _oidc_list(args: argparse.Namespace, open_store: StoreOpener) -> int:
    _, store = open_store(args)
    try:
        rows = store.list_external_identities()
        names = {u.id: u.name for u in store.list_users()}
    finally:
        store.close()
    print("USER\tISSUER\tSUBJECT\tLINKED\tLAST_SIGN_IN")
    for i in rows:
        print(f"{names.get(i.user_id, i.user_id)}\t{i.issuer}\t{i.subject}\t{_when(i.created_at)}\t"
              f"{_when(i.last_login_at)}")  # fmt: skip
    return 0


def _oidc_link(args: argparse.Namespace, open_store: StoreOpener) -> int:
    config, store = open_store(args)
    try:
        issuer = _issuer(args, config)
        user = store.find_user(args.name)
        created = user is None
        if user is None:
            if not USER_NAME.fullmatch(args.name):
                raise PortalError(f"user name {args.name!r} is not allowed.", code="portal.user.name")
            user = User(id=new_id(), name=args.name, password_hash=OIDC_PASSWORD_HASH, created_at=time.time())
            store.create_user(user)
        try:
            store.add_external_identity(ExternalIdentity(issuer, args.subject, user.id, time.time()))
        except StoreConflict:
            raise PortalError(f"subject {args.subject!r} of {issuer} is already linked to a portal user "
                              "(`oidc list`).", code="portal.oidc.taken") from None  # fmt: skip
    finally:
        store.close()
    made = " (created, without a password)" if created else ""
    print(f"{args.subject} at {issuer} signs in as {args.name}{made}")
    return 0


def _oidc_unlink(args: argparse.Namespace, open_store: StoreOpener) -> int:
    config, store = open_store(args)
    try:
        done = store.delete_external_identity(_issuer(args, config), args.subject)
    finally:
        store.close()
    print(f"unlinked {args.subject}" if done else f"{args.subject} was not linked")
    return 0
