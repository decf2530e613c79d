"""Unit tests of the credential boundary's pieces, written to kill the mutants that survived ``make mutants``
(every spelling of each character, the boundary scrub of each kind of body and outcome, reserved names,
the secrets of static headers, the spec-call budget). The end-to-end claims are in ``tests/test_attacks.py``."""

from __future__ import annotations

import base64
import json

import pytest

from codemode._boundary import scrub_body, scrub_outcome, scrub_response
from codemode._credentials import guest_override, header_secrets, is_credential_header
from codemode._errors import ConfigError
from codemode._execute import _client_key, _SpecBudget
from codemode._sandbox import GuestError, RunOutcome
from codemode._scrub import REDACTED, Scrubber, basic_auth_forms
from codemode._upstream_types import UpstreamRequest, UpstreamResponse

ASTRAL = "tok-😀-0123456789"  # a character outside the BMP: JSON writes it as a surrogate pair


@pytest.mark.parametrize(
    "spelling",
    [
        "tok-\\ud83d\\ude00-0123456789",
        "tok-\\uD83D\\uDE00-0123456789",
        "tok-%F0%9F%98%80-0123456789",
        "tok-%f0%9f%98%80-0123456789",
        "tok-&#128512;-0123456789",
        "tok-&#x1F600;-0123456789",
        "tok-&#X1f600;-0123456789",
        "tok-&#x0001F600-0123456789",
    ],
)
def test_astral_characters_in_every_spelling(spelling: str) -> None:
    assert Scrubber([ASTRAL]).scrub_text(f"<{spelling}>") == f"<{REDACTED}>"


@pytest.mark.parametrize(
    ("secret", "spelling"),
    [
        ("a/b\\c\"d-0123", 'a\\/b\\\\c\\"d-0123'),  # JSON short escapes
        ("line\nbreak-0123", "line\\nbreak-0123"),
        ("tab\there-0123", "tab\\there-0123"),
        ("amp&less<-0123", "amp&amp;less&lt;-0123"),
        ("amp&less<-0123", "amp&AMP;less&LT-0123"),  # legacy names without the semicolon
        ("a b c-0123", "a+b%20c-0123"),
        ("a+b+c-0123", "a b%2Bc-0123"),
        ("ZZZ-0123ab", "%5a%5A%5a-%30123%61%62"),  # unreserved characters encoded, either case
    ],
)
def test_every_spelling_of_every_character(secret: str, spelling: str) -> None:
    assert Scrubber([secret]).scrub_text(f"[{spelling}]") == f"[{REDACTED}]"
    assert Scrubber([secret]).scrub_bytes(f"[{spelling}]".encode(), "utf-8") == f"[{REDACTED}]".encode()


def test_near_misses_are_left_alone() -> None:
    s = Scrubber(["abcdef-0123"])
    for text in ("abcdef-012", "abcdeg-0123", "%61bcdef-012", "abcdef_0123", "ABCDEF-0123"):
        assert s.scrub_text(text) == text


def test_bytes_in_each_wide_encoding_are_redacted_in_that_encoding() -> None:
    s = Scrubber(["sk-live-0123456789"])
    for encoding in ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"):
        data = "x sk-live-0123456789 y".encode(encoding)
        assert s.scrub_bytes(data, encoding).decode(encoding) == f"x {REDACTED} y", encoding
    # a charset name the codec registry does not know falls back to UTF-8 spellings
    assert s.scrub_bytes(b"sk-live-0123456789", "no-such-charset") == REDACTED.encode()
    assert Scrubber().scrub_bytes(b"sk-live-0123456789") == b"sk-live-0123456789"


def test_binary_and_text_bodies_are_scrubbed_at_the_boundary() -> None:
    s = Scrubber(["sk-live-0123456789"])
    raw = b"\x00\xffsk-live-0123456789\x01"
    body = {"base64": base64.b64encode(raw).decode(), "content_type": "application/octet-stream"}
    out = scrub_body(s, body)
    assert set(out) == {"base64", "content_type"} and out["content_type"] == "application/octet-stream"
    assert base64.b64decode(out["base64"]) == b"\x00\xff" + REDACTED.encode() + b"\x01"
    utf16 = {"base64": base64.b64encode("sk-live-0123456789".encode("utf-16-le")).decode(),
             "content_type": "text/plain; charset=utf-16-le"}  # fmt: skip
    assert base64.b64decode(scrub_body(s, utf16)["base64"]).decode("utf-16-le") == REDACTED
    latin = {"base64": base64.b64encode("é sk-live-0123456789".encode("latin-1")).decode(),
             "content_type": 'text/plain; charset="latin-1"'}  # fmt: skip
    assert REDACTED.encode() in base64.b64decode(scrub_body(s, latin)["base64"])
    not_base64 = {"base64": "not base64! sk-live-0123456789", "content_type": "x/y"}
    assert scrub_body(s, not_base64) == {"base64": f"not base64! {REDACTED}", "content_type": "x/y"}
    assert scrub_body(s, {"token": "sk-live-0123456789"}) == {"token": REDACTED}
    assert scrub_body(Scrubber(), body) is body  # nothing to scrub: untouched
    response = UpstreamResponse(status=200, headers={"X-Echo": "sk-live-0123456789"}, body="sk-live-0123456789",
                                elapsed_ms=1.0, attempts=1)  # fmt: skip
    scrubbed = scrub_response(s, response)
    assert scrubbed.headers == {"X-Echo": REDACTED} and scrubbed.body == REDACTED and scrubbed.status == 200


def test_the_run_outcome_is_scrubbed_everywhere() -> None:
    s = Scrubber(["sk-live-0123456789"])
    secret = "sk-live-0123456789"
    outcome = RunOutcome(
        ok=False, stdout=f"out {secret}", stdout_truncated=False, result={"k": [secret]},
        error=GuestError(type=f"E{secret}", message=f"m {secret}", line=3, traceback=f"t {secret}"),
        limit=None, duration_ms=1.0, notes=(f"n {secret}",),
    )  # fmt: skip
    out = scrub_outcome(s, outcome)
    assert out.error is not None and out.error.line == 3 and out.stdout == f"out {REDACTED}"
    error = (out.error.type, out.error.message, out.error.traceback)
    assert error == (f"E{REDACTED}", f"m {REDACTED}", f"t {REDACTED}")
    assert out.result == {"k": [REDACTED]} and out.notes == (f"n {REDACTED}",)
    assert scrub_outcome(Scrubber(), outcome) is outcome
    fine = RunOutcome(ok=True, stdout="", stdout_truncated=False, result=None, error=None, limit=None,
                      duration_ms=1.0)  # fmt: skip
    assert scrub_outcome(s, fine).error is None


def _request(**kw: object) -> UpstreamRequest:
    return UpstreamRequest(operation="x", method="GET", url="https://h/x", **kw)  # type: ignore[arg-type]


def test_reserved_names_in_every_location() -> None:
    reserved = frozenset({("header", "x-api-key"), ("query", "key"), ("cookie", "sid")})
    assert "header 'X-API-Key'" in (guest_override(_request(headers={"X-API-Key": "v"}), reserved, {}) or "")
    assert "query parameter 'KEY'" in (guest_override(_request(params=[("KEY", "v")]), reserved, {}) or "")
    assert "cookie 'SID'" in (guest_override(_request(cookies={"SID": "v"}), reserved, {}) or "")
    harmless = _request(headers={"X-Other": "v"}, params=[("q", "v")], cookies={"c": "v"})
    assert guest_override(harmless, reserved, {}) is None
    static = {"Authorization": "Bearer sk-live-0123456789"}
    assert guest_override(_request(headers={"AUTHORIZATION": "Bearer mine"}), frozenset(), static) is not None


def test_secrets_of_static_headers() -> None:
    assert header_secrets({"Authorization": "Bearer tok-0123456789"}) == ["Bearer tok-0123456789", "tok-0123456789"]
    assert header_secrets({"X-Key": "abcdef"}) == ["abcdef"]  # exactly the minimum length
    assert header_secrets({"X-Mode": "Token two words-123456"}) == ["Token two words-123456", "two words-123456"]
    assert header_secrets({"Accept": "a/b"}) == []  # short, and not a credential header: not a secret
    for name in ("Authorization", "proxy-authorization", "Cookie", "X-Api-Key", "X-Auth", "Session-Id",
                 "X-Password", "X-Signature", "X-Credential", "My-Secret", "Token"):  # fmt: skip
        assert is_credential_header(name), name
        with pytest.raises(ConfigError) as info:
            header_secrets({name: "abc"})
        assert info.value.code == "config.short_secret" and repr(name) in info.value.message
    for name in ("Accept", "X-Version", "User-Agent"):
        assert not is_credential_header(name), name


def test_basic_auth_forms_and_extended_scrubbers() -> None:
    forms = basic_auth_forms("user", "pa55word-x")
    assert forms[0] == "pa55word-x" and forms[1] == "user:pa55word-x" and forms[3] == f"Basic {forms[2]}"
    base = Scrubber(["server-secret-1"])
    first = base.extended(["user-secret-2"])
    assert base.extended(["user-secret-2"]) is first  # cached per set of extra secrets
    assert first.secrets() == {"server-secret-1", "user-secret-2"}
    base.add("server-secret-3")  # the server learns a token later: a derived scrubber is rebuilt
    assert "server-secret-3" in base.extended(["user-secret-2"]).secrets()


def test_the_spec_call_budget_of_code_mode_search() -> None:
    calls: list[str] = []

    def bridge(channel: str, payload: str) -> tuple[bool, str]:
        calls.append(channel)
        return True, "[]"

    budget = _SpecBudget(3, bridge)
    answers = [budget("spec", "{}") for _ in range(5)]
    assert [ok for ok, _ in answers] == [True, True, True, False, False] and len(calls) == 3
    assert json.loads(answers[3][1]) == {
        "kind": "limit", "message": "this search reached its spec call limit (max_spec_calls=3)",
        "status": None, "body": None, "operation": None,
    }  # fmt: skip


def test_fair_share_keys() -> None:
    from codemode import Caller

    assert _client_key(Caller(subject="alice"), "s1") == "subject:alice"
    assert _client_key(None, "s1") == "session:s1"
    assert _client_key(None, None) == "session:-"


def test_longer_secrets_win_over_their_prefixes_in_text_and_bytes() -> None:
    s = Scrubber(["abcdef-0123", "abcdef-0123-longer", "zyxwvu-9876"])
    assert s.scrub_text("abcdef-0123-longer zyxwvu-9876") == f"{REDACTED} {REDACTED}"
    assert s.scrub_bytes(b"abcdef-0123-longer zyxwvu-9876") == f"{REDACTED} {REDACTED}".encode()
    assert s.scrub_bytes("abcdef-0123-longer".encode("utf-16-le"), "utf-16-le") == REDACTED.encode("utf-16-le")


def test_the_first_astral_character_and_non_utf8_binary_bodies() -> None:
    first = "tok-\U00010000-0123"  # U+10000: the low bits of its surrogate pair are all zero
    assert Scrubber([first]).scrub_text("tok-\\ud800\\udc00-0123") == REDACTED
    secret = "pässwörd-0123"
    latin = {"base64": base64.b64encode(f"x {secret} y".encode("latin-1")).decode(),
             "content_type": "text/plain; charset=latin-1"}  # fmt: skip
    assert base64.b64decode(scrub_body(Scrubber([secret]), latin)["base64"]) == f"x {REDACTED} y".encode()
    spaced = {"base64": "c2st bGl2ZS0wMTIz", "content_type": "x/y"}  # not strict base64: handled as text
    assert scrub_body(Scrubber(["sk-live-0123456789"]), spaced) == spaced


def test_log_records_that_cannot_be_formatted_are_scrubbed_and_stack_info_kept() -> None:
    import logging

    from codemode._scrub import LogScrubbing

    log_filter = LogScrubbing()
    scrubber = Scrubber(["sk-live-0123456789"])
    log_filter.register(scrubber)
    bad = logging.LogRecord("codemode", logging.WARNING, "f", 1, "key sk-live-0123456789 %d", ("x",), None)
    assert log_filter.filter(bad) and bad.getMessage() == f"key {REDACTED} %d"
    stacked = logging.LogRecord("codemode", logging.INFO, "f", 1, "m", None, None, sinfo="at sk-live-0123456789")
    assert log_filter.filter(stacked) and stacked.stack_info == f"at {REDACTED}"
    try:
        raise RuntimeError("boom sk-live-0123456789")
    except RuntimeError:
        import sys

        failed = logging.LogRecord("codemode", logging.ERROR, "f", 1, "m", None, sys.exc_info())
    failed.exc_text = "already formatted sk-live-0123456789"
    assert log_filter.filter(failed) and failed.exc_text == f"already formatted {REDACTED}"
    log_filter.unregister(scrubber)
    plain = logging.LogRecord("codemode", logging.INFO, "f", 1, "sk-live-0123456789", None, None)
    assert log_filter.filter(plain) and plain.getMessage() == "sk-live-0123456789"  # nothing registered


def test_the_python_fallback_matcher() -> None:
    from codemode._scrub import _Matcher

    matcher = _Matcher("abc|x\\+y")
    matcher.re2 = None  # as for a pattern over RE2's memory budget
    assert matcher.sub(REDACTED, "1abc2x+y3") == f"1{REDACTED}2{REDACTED}3"
