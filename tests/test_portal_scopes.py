"""Scopes per server and per operation: the catalogue, and what a set of granted scopes may call."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")

from codemode_portal import ScopeEntry
from codemode_portal._scopes import ServerScopes, parse_scope, scope_token_ok

from codemode import load_spec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def petstore() -> ServerScopes:
    spec = load_spec(str(ROOT / "specs" / "petstore3-openapi.yaml"))
    extra = {
        "orders": ScopeEntry(description="Store orders", tags=("store",)),
        "pet-admin": ScopeEntry(operations=("pet.delete", "POST /pet/{petId}/uploadImage")),
    }
    return ServerScopes("pets", spec, extra)


def op(scopes: ServerScopes, key: str):  # type: ignore[no-untyped-def]
    spec = load_spec(str(ROOT / "specs" / "petstore3-openapi.yaml"))
    found = spec.operation(key)
    assert found is not None, key
    return found


def test_catalogue(petstore: ServerScopes) -> None:
    assert petstore.supported[:2] == ("pets:read", "pets:write")
    assert {"pets:read:pets", "pets:write:pets", "pets:orders", "pets:pet-admin"} <= set(petstore.supported)
    info = {i.name: i for i in petstore.infos}
    assert info["pets:read"].operations + info["pets:write"].operations == 19
    assert info["pets:orders"].description == "Store orders" and info["pets:orders"].operations == 4
    assert info["pets:pet-admin"].operations == 2
    assert info["pets:read:pets"].description == "read your pets (8 operations need it)"  # the spec's own words
    assert petstore.unknown(["pets:read", "other:read", "pets:nope"]) == ["other:read", "pets:nope"]


def test_coarse_scopes(petstore: ServerScopes) -> None:
    read = petstore.denial(["pets:read"])
    assert read(op(petstore, "pet.find_pets_by_status")) is None
    why = read(op(petstore, "pet.add"))
    assert why is not None and why.startswith("needs scope pets:write") and "pets:read" in why
    assert petstore.denial(["pets:read", "pets:write"])(op(petstore, "pet.add")) is None
    assert petstore.denial(["pets:write"])(op(petstore, "pet.find_pets_by_status")) is not None  # write ≠ read


def test_spec_scopes_need_a_whole_alternative(petstore: ServerScopes) -> None:
    add = op(petstore, "pet.add")  # petstore_auth: [write:pets, read:pets]
    assert petstore.denial(["pets:read", "pets:write:pets"])(add) is not None
    assert petstore.denial(["pets:read", "pets:write:pets", "pets:read:pets"])(add) is None
    why = petstore.denial(["pets:read"])(add)
    assert why is not None and "pets:write:pets + pets:read:pets" in why
    by_id = op(petstore, "pet.get_by_id")  # api_key (no scopes) OR petstore_auth: an empty alternative grants nothing
    assert petstore.denial(["pets:orders"])(by_id) is not None


def test_config_scopes_by_tag_and_glob(petstore: ServerScopes) -> None:
    orders = petstore.denial(["pets:read", "pets:orders"])
    assert orders(op(petstore, "store.place_order")) is None
    assert orders(op(petstore, "pet.add")) is not None
    admin = petstore.denial(["pets:read", "pets:pet-admin"])
    assert admin(op(petstore, "pet.delete")) is None
    assert admin(op(petstore, "pet.upload_file")) is None
    assert admin(op(petstore, "pet.update")) is not None
    assert "pets:pet-admin" in (petstore.denial(["pets:read"])(op(petstore, "pet.delete")) or "")


def test_scope_tokens() -> None:
    assert parse_scope(" a  b a ") == ("a", "b")
    assert parse_scope(None) == ()
    assert scope_token_ok("pets:read") and not scope_token_ok('a"b') and not scope_token_ok("a\\b")
    assert not scope_token_ok("é")
