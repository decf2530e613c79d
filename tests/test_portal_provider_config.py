"""portal.toml keys for each user's own upstream credentials and for OpenID Connect sign-in:
validated, with one line naming the key and its line."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")

from codemode_portal import PortalConfigError, load_portal_config

GOOD = """\
[portal]
public_url = "https://mcp.example.com"

[portal.oidc]
issuer = "https://accounts.example.com/"
client_id = "portal"
client_secret = "OIDC_SECRET"
create_users = true

[servers.notes]
spec = "https://notes.example.com/openapi.json"
upstream_auth = "per-user"

[servers.notes.upstream_oauth]
client_id = "codemode"
client_secret = "NOTES_SECRET"
scopes = ["notes:read"]
authorize_params = { access_type = "offline" }

[servers.keys]
spec = "https://keys.example.com/openapi.json"
upstream_auth = "per-user"
upstream_scheme = "bearer"
"""


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "portal.toml"
    path.write_text(text)
    return load_portal_config(path)


def test_a_good_config(tmp_path: Path) -> None:
    cfg = load(tmp_path, GOOD)
    assert cfg.failed == {}
    oidc = cfg.settings.oidc
    assert oidc is not None and oidc.issuer == "https://accounts.example.com/"  # kept exactly
    assert oidc.auth_method == "client_secret_basic" and oidc.button_label == "Sign in with accounts.example.com"
    assert oidc.scopes == ("openid", "profile", "email") and oidc.create_users
    notes = cfg.servers["notes"]
    assert notes.upstream_oauth is not None and notes.upstream_oauth.scopes == ("notes:read",)
    assert notes.upstream_oauth.auth_method == "client_secret_basic" and notes.upstream_paste
    assert cfg.servers["keys"].upstream_scheme == "bearer" and cfg.servers["keys"].upstream_oauth is None


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('client_secret = "NOTES_SECRET"', 'client_secret = "s3cr3t value"',
         "portal.toml:16: servers.notes.upstream_oauth.client_secret: names an environment variable"),
        ('upstream_auth = "per-user"\n\n[servers.notes.upstream_oauth]', 'upstream_auth = "shared"\n\n'
         "[servers.notes.upstream_oauth]", "servers.notes: upstream_oauth needs upstream_auth = 'per-user'"),
        ('scopes = ["notes:read"]', 'scopes = ["bad scope"]',
         "portal.toml:17: servers.notes.upstream_oauth.scopes: 'bad scope' is not an OAuth scope"),
        ('client_id = "codemode"', 'client_id = "codemode"\ntoken_url = "http://notes.example.com/token"',
         "servers.notes.upstream_oauth.token_url: must be https:// (http:// only for a loopback host)"),
        ("authorize_params = { access_type", "authorize_params = { state",
         "servers.notes.upstream_oauth.authorize_params: state is set by the portal itself"),
        ('upstream_scheme = "bearer"', 'upstream_scheme = "bearer"\nupstream_paste = false',
         "servers.keys: a per-user server needs upstream_paste = true or an [upstream_oauth] table"),
    ],
)
def test_a_bad_server_entry_fails_that_server_alone(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in GOOD
    cfg = load(tmp_path, GOOD.replace(old, new, 1))
    assert len(cfg.failed) == 1, cfg.failed
    (problem,) = cfg.failed.values()
    assert expected in problem, problem
    assert len(cfg.servers) == 1


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('issuer = "https://accounts.example.com/"', 'issuer = "http://accounts.example.com"',
         "portal.toml:5: portal.oidc.issuer: must be https://"),
        ('client_id = "portal"\n', "", "portal.toml:4: portal.oidc.client_id: Field required"),
        ("create_users = true", 'create_users = true\nscopes = ["profile"]',
         "portal.oidc.scopes: must include openid"),
        ("create_users = true", "create_users = true\nsurprise = 1", "portal.oidc.surprise: Extra inputs"),
    ],
)
def test_a_bad_oidc_table_is_one_line_naming_the_key(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in GOOD
    with pytest.raises(PortalConfigError) as err:
        load(tmp_path, GOOD.replace(old, new, 1))
    assert expected in err.value.message and "\n" not in err.value.message, err.value.message
