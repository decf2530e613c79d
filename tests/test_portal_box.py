"""The credential box: AES-GCM sealing bound to a context, keys from the environment or a 0600 key
file, clear refusals of malformed or unsafe keys, and rotation (new key seals, old keys open)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

pytest.importorskip("cryptography")

from codemode_portal._box import (
    ENV_KEYS,
    KEY_FILE,
    CredentialKeyError,
    SealError,
    SecretBox,
    drop_old_keys,
    generate_key,
    load_box,
    parse_key,
    rotate_key_file,
)


def box(*keys: str) -> SecretBox:
    return SecretBox([parse_key(k, "test") for k in keys])


def test_seal_and_open_bound_to_the_context() -> None:
    b = box(generate_key())
    sealed = b.seal("ghp_secret-token", context="upstream:u1:github:secret")
    assert "ghp_secret" not in sealed and sealed.startswith("cmk1.")
    assert b.open(sealed, context="upstream:u1:github:secret") == "ghp_secret-token"
    assert b.seal("x", context="c") != b.seal("x", context="c")  # a fresh nonce every time
    for other in ("upstream:u2:github:secret", "upstream:u1:other:secret", "upstream:u1:github:refresh"):
        with pytest.raises(SealError, match="does not open"):
            b.open(sealed, context=other)


def test_tampering_is_detected() -> None:
    b = box(generate_key())
    sealed = b.seal("value", context="c")
    head, kid, body = sealed.split(".")
    for bad in (
        f"{head}.{kid}.{body[:-2]}{'A' if body[-2] != 'A' else 'B'}{body[-1]}",  # one bit of the tag/ciphertext
        f"{head}.{kid}.{body[:10]}",  # truncated
        f"{head}.{kid}.{body}!!",  # not base64
        f"cmk0.{kid}.{body}",  # unknown format
        "plain-text-token",  # never sealed
    ):
        with pytest.raises(SealError):
            b.open(bad, context="c")


def test_an_unknown_key_is_named_by_its_id_only() -> None:
    old, new = generate_key(), generate_key()
    sealed = box(old).seal("value", context="c")
    with pytest.raises(SealError, match=r"sealed under key [0-9a-f]{8}, which is not among") as err:
        box(new).open(sealed, context="c")
    assert old not in str(err.value) and new not in str(err.value)


def test_rotation_new_key_seals_old_keys_open() -> None:
    old, new = generate_key(), generate_key()
    before = box(old).seal("value", context="c")
    both = box(new, old)
    assert both.open(before, context="c") == "value"
    resealed = both.reseal(before, context="c")
    assert resealed is not None and both.key_of(resealed) == both.current
    assert both.reseal(resealed, context="c") is None  # already under the current key
    assert box(new).open(resealed, context="c") == "value"


@pytest.mark.parametrize(
    "value",
    ["", "short", generate_key()[:-2], generate_key() + "AAAA", "+" * 43, "/" * 43, "é" * 43, "a!" + "A" * 41],
)
def test_malformed_keys_are_refused_without_echoing_them(value: str) -> None:
    with pytest.raises(CredentialKeyError, match="not a credential key") as err:
        parse_key(value, "SOMEWHERE")
    assert "SOMEWHERE" in str(err.value)
    if len(value) > 3:
        assert value not in str(err.value)


def test_keys_from_the_environment(tmp_path: Path) -> None:
    k1, k2 = generate_key(), generate_key()
    b = load_box(tmp_path, {ENV_KEYS: f"{k1}, {k2}"})
    assert b.current == box(k1).current and len(b.key_ids) == 2 and b.source == ENV_KEYS
    assert not (tmp_path / KEY_FILE).exists()  # the environment wins; no file is made
    with pytest.raises(CredentialKeyError, match=f"{ENV_KEYS} \\(key 2\\): not a credential key"):
        load_box(tmp_path, {ENV_KEYS: f"{k1},nope"})
    with pytest.raises(CredentialKeyError, match="is set but holds no key"):
        load_box(tmp_path, {ENV_KEYS: " , "})


def test_the_key_file_is_created_0600_and_reused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = load_box(data, {})
    path = data / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_box(data, {}).current == first.current  # the same key next start
    sealed = first.seal("v", context="c")
    assert load_box(data, {}).open(sealed, context="c") == "v"


def test_an_unsafe_or_malformed_key_file_stops_the_portal(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    load_box(tmp_path, {})
    os.chmod(path, 0o644)
    with pytest.raises(CredentialKeyError, match=r"may be read by other users \(mode 644\); run `chmod 600"):
        load_box(tmp_path, {})
    os.chmod(path, 0o600)
    path.write_text("# comment\n\nnot-a-key\n")
    with pytest.raises(CredentialKeyError, match=f"{path}:3: not a credential key"):
        load_box(tmp_path, {})
    path.write_text("# only comments\n")
    with pytest.raises(CredentialKeyError, match="holds no key"):
        load_box(tmp_path, {})
    with pytest.raises(CredentialKeyError, match="no credential key file"):
        load_box(tmp_path / "elsewhere", {}, create=False)


def test_rotating_the_key_file(tmp_path: Path) -> None:
    old_box = load_box(tmp_path, {})
    sealed = old_box.seal("v", context="c")
    new_id, kept = rotate_key_file(tmp_path)
    assert kept == [old_box.current] and new_id != old_box.current
    path = tmp_path / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    rotated = load_box(tmp_path, {})
    assert rotated.current == new_id and rotated.open(sealed, context="c") == "v"
    resealed = rotated.reseal(sealed, context="c")
    assert resealed is not None
    assert drop_old_keys(tmp_path) == [old_box.current]
    final = load_box(tmp_path, {})
    assert final.key_ids == (new_id,)
    assert final.open(resealed, context="c") == "v"
    with pytest.raises(SealError, match="not among the configured keys"):
        final.open(sealed, context="c")
