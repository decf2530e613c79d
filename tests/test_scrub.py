from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

from codemode._scrub import REDACTED, Scrubber, basic_auth_forms


def test_substring_replaced_in_text() -> None:
    s = Scrubber(["s3cr3t-token"])
    assert s.scrub_text("token=s3cr3t-token; again s3cr3t-token") == (f"token={REDACTED}; again {REDACTED}")


def test_no_secrets_is_identity() -> None:
    s = Scrubber()
    obj = {"a": ["b", 1]}
    assert s.scrub_obj(obj) is obj
    assert s.scrub_text("anything") == "anything"
    assert len(s) == 0


def test_short_secret_only_whole_string() -> None:
    s = Scrubber(["abc"])
    assert s.scrub_text("abc") == REDACTED
    assert s.scrub_text("abcdef and abc") == "abcdef and abc"
    assert s.scrub_obj({"abc": "abc", "x": "xabc"}) == {REDACTED: REDACTED, "x": "xabc"}


def test_empty_secret_ignored() -> None:
    s = Scrubber(["", "longsecret"])
    assert s.scrub_text("") == ""
    assert len(s) > 0


def test_nested_json_keys_and_values() -> None:
    secret = "hunter2hunter2"
    s = Scrubber([secret])
    data: dict[str, Any] = {
        "headers": {"Authorization": f"Bearer {secret}", secret: 1},
        "list": [secret, {"deep": (f"x{secret}y",)}],
        "n": 3,
        "none": None,
        "flag": True,
    }
    out = s.scrub_obj(data)
    assert out == {
        "headers": {"Authorization": f"Bearer {REDACTED}", REDACTED: 1},
        "list": [REDACTED, {"deep": (f"x{REDACTED}y",)}],
        "n": 3,
        "none": None,
        "flag": True,
    }
    assert data["list"][0] == secret  # input untouched


def test_headers() -> None:
    s = Scrubber(["tok-123456"])
    assert s.scrub_headers({"X-Echo": "tok-123456", "Other": "fine"}) == {
        "X-Echo": REDACTED,
        "Other": "fine",
    }


def test_longest_secret_wins() -> None:
    s = Scrubber(["abcdef", "abcdefghij"])
    assert s.scrub_text("abcdefghij") == REDACTED
    assert s.scrub_text("abcdefXX") == f"{REDACTED}XX"


def test_regex_metacharacters_are_literal() -> None:
    s = Scrubber(["a.b*c+d?"])
    assert s.scrub_text("a.b*c+d?") == REDACTED
    assert s.scrub_text("aXbbbcdd") == "aXbbbcdd"


def test_url_encoded_form_is_scrubbed() -> None:
    s = Scrubber(["key with/slash&amp"])
    assert s.scrub_text("?k=key%20with%2Fslash%26amp") == f"?k={REDACTED}"
    assert s.scrub_text("?k=key+with%2Fslash%26amp") == f"?k={REDACTED}"


def test_add_rebuilds() -> None:
    s = Scrubber()
    assert s.scrub_text("later-secret") == "later-secret"
    s.add("later-secret")
    assert s.scrub_text("later-secret") == REDACTED
    s.add("later-secret")  # no-op
    assert s.scrub_text("x later-secret") == f"x {REDACTED}"


def test_basic_auth_forms() -> None:
    forms = basic_auth_forms("user", "pa55word")
    encoded = base64.b64encode(b"user:pa55word").decode()
    assert forms == ["pa55word", "user:pa55word", encoded, f"Basic {encoded}"]
    s = Scrubber(forms)
    assert s.scrub_text(f"Authorization: Basic {encoded}") == f"Authorization: {REDACTED}"


def test_repr_hides_secrets() -> None:
    s = Scrubber(["supersecretvalue"])
    assert "supersecret" not in repr(s)


def test_lower_case_percent_encodings_are_scrubbed() -> None:
    from codemode._scrub import Scrubber

    scrubber = Scrubber(["ab+cd/ef-secret"])
    assert "secret" not in scrubber.scrub_text("q=ab%2bcd%2fef-secret and ab%2Bcd%2Fef-secret")


def test_extended_adds_secrets_without_changing_the_original() -> None:
    base = Scrubber(["server-secret-1"])
    assert base.extended([]) is base and base.extended(["server-secret-1"]) is base
    both = base.extended(["user-secret-2"])
    assert both.scrub_text("server-secret-1 user-secret-2") == "[REDACTED] [REDACTED]"
    assert base.scrub_text("user-secret-2") == "user-secret-2"


def test_text_re2_cannot_take_is_scrubbed_all_the_same() -> None:
    s = Scrubber(["pässwörd-0123"])
    assert s.scrub_text("lone \ud800 surrogate, pässwörd-0123") == "lone \ud800 surrogate, [REDACTED]"
    assert s.scrub_text("p%C3%A4ssw%c3%b6rd-0123") == "[REDACTED]"
    assert s.scrub_bytes("pässwörd-0123".encode("latin-1"), "latin-1") == b"[REDACTED]"
    assert s.scrub_bytes(b"a\\" + "pässwörd-0123".encode() + b"\\b") == b"a\\[REDACTED]\\b"


def test_a_program_embedding_the_library_logs_no_request_urls_and_scrubs_every_root_handler() -> None:
    """With no logging configured, the SDK's server sets up the root logger: not at INFO (every
    upstream URL), and the scrubbing filter is on the handler it adds."""
    code = (
        "import logging\n"
        "from codemode import load_spec\n"
        "from codemode._server import CodemodeServer\n"
        "from codemode._scrub import LOG_FILTER\n"
        "server = CodemodeServer(load_spec('specs/petstore3-openapi.yaml'),\n"
        "                        env={'CODEMODE_API_KEY': 'sk-embedded-0123456789'})\n"
        "root = logging.getLogger()\n"
        "assert root.handlers and all(LOG_FILTER in h.filters for h in root.handlers), root.handlers\n"
        "logging.getLogger('httpx').info('HTTP Request: GET http://upstream.example/pets?status=sold')\n"
        "logging.getLogger('httpcore.http11').warning('sent api_key=sk-embedded-0123456789')\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root)
    assert out.returncode == 0, out.stderr
    assert "upstream.example" not in out.stderr, out.stderr
    assert "sk-embedded-0123456789" not in out.stderr and "[REDACTED]" in out.stderr, out.stderr
