"""The thin CLI and server config files: clear one-line errors, no tracebacks, exit codes."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codemode import ConfigError
from codemode._cli import main
from codemode._config import load_server_config, server_config_spec

ROOT = Path(__file__).resolve().parents[1]


def test_config_expands_env_and_resolves_spec_relative_to_file() -> None:
    spec, settings = load_server_config(
        ROOT / "servers" / "kinto.toml", env={"KINTO_URL": "http://127.0.0.1:1/v1", "KINTO_BASIC": "YWRtaW46eA=="}
    )
    assert spec == str((ROOT / "specs" / "kinto-26.5.0-served-__api__.json").resolve())
    assert settings.upstream.base_url == "http://127.0.0.1:1/v1"
    assert settings.upstream.headers == {"Authorization": "Basic YWRtaW46eA=="}
    assert settings.execute.deny == ("flush.*",)


def test_config_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_server_config(ROOT / "servers" / "kinto.toml", env={})
    assert "KINTO_URL is not set" in info.value.message and info.value.code == "config.missing_env"
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nspec = "x.yaml"\n[execute]\nmax_calls = -1\nbogus = 1\n')
    with pytest.raises(ConfigError) as info:
        load_server_config(bad, env={})
    assert "execute.max_calls" in info.value.message and "execute.bogus" in info.value.message
    bad.write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_server_config(bad, env={})
    for text, code, words in [
        ('server = "x"\n', "config.parse", "server must be a table ([server]), not a str"),
        ("server = [1, 2]\n", "config.parse", "not a list"),
        ('[server]\nspec = ""\n', "config.no_spec", "[server] needs spec"),
        ("[server]\nspec = 5\n", "config.no_spec", "[server] needs spec"),
    ]:
        bad.write_text(text)
        for read in (load_server_config, server_config_spec):
            with pytest.raises(ConfigError) as info:
                read(bad)
            assert info.value.code == code and words in info.value.message, (text, info.value.message)


def test_every_bundled_server_config_is_valid() -> None:
    env = {k: "http://127.0.0.1:1" for k in ("KINTO_URL", "JUPYTER_URL", "HTTPBIN_URL")}
    env |= {"KINTO_BASIC": "x", "JUPYTER_TOKEN": "x"}
    for path in sorted((ROOT / "servers").glob("*.toml")):
        spec, _ = load_server_config(path, env=env)
        assert Path(spec).exists(), path


def test_search_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "petstore3-openapi.yaml", "find pets by status", "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "GET /pet/findByStatus" in out and "api.pet.find_pets_by_status(" in out
    assert main(["search", "petstore3-openapi.yaml", "--detail", "schema:Pet"]) == 0
    assert "class Pet(TypedDict):" in capsys.readouterr().out


def test_inspect_reports_warnings(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "openapi: 3.0.0\ninfo: {title: t, version: '1'}\npaths:\n  /a:\n    get:\n      parameters:\n"
        "        - {$ref: '#/nope'}\n      responses: {'200': {description: ok}}\n"
    )
    assert main(["--no-cache", "inspect", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "operations: 1" in out and "/paths/~1a/get/parameters/0" in out


def test_inspect_names_the_credential_variables(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEMODE_API_KEY", "k-123456")
    assert main(["inspect", "petstore3-openapi.yaml"]) == 0
    out = capsys.readouterr().out
    assert "api_key (apiKey in header api_key): configured from CODEMODE_API_KEY" in out
    assert "petstore_auth (oauth2): missing CODEMODE_PETSTORE_AUTH" in out
    assert "k-123456" not in out


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        (["inspect", "/no/such.yaml"], 2, "error [spec.not_found]: spec not found: /no/such.yaml"),
        (["serve", "/no/such.yaml"], 2, "error [spec.not_found]"),
        (["serve", "servers/kinto.toml"], 2, "error [config.missing_env]"),
        (["run", "petstore3-openapi.yaml", "-", "--header", "nocolon"], 2, "error [config.bad_header]"),
    ],
)
def test_errors_are_one_line_without_traceback(argv: list[str], code: int, needle: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(ROOT / ".pytest_cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "codemode", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        input="",
        timeout=60,
    )
    assert proc.returncode == code, proc.stderr
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_command_line_flags_apply_on_top_of_a_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from codemode._cli import build_parser
    from codemode._cli._common import source_and_settings

    monkeypatch.setenv("KINTO_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("KINTO_BASIC", "eA==")
    monkeypatch.setenv("EXTRA_TOKEN", "tok-123")
    argv = [
        "serve",
        str(ROOT / "servers" / "kinto.toml"),
        "--allow",
        "records.*",
        "--deny",
        "buckets.*",
        "--max-calls",
        "7",
        "--timeout",
        "5",
        "--header",
        "X-Extra: ${EXTRA_TOKEN}",
        "--name",
        "k",
        "--read-only",
    ]
    _, settings = source_and_settings(build_parser().parse_args(argv))
    ex = settings.execute
    assert ex.allow == ("records.*",) and ex.deny == ("flush.*", "buckets.*") and ex.read_only
    assert ex.max_calls == 7 and ex.limits.timeout_seconds == 5
    assert settings.upstream.headers == {"Authorization": "Basic eA==", "X-Extra": "tok-123"}
    assert settings.name == "k" and settings.upstream.base_url == "http://127.0.0.1:1/v1"
    with pytest.raises(SystemExit):  # refused by the parser: "--max-calls: -1 is out of range"
        build_parser().parse_args(["serve", "petstore3-openapi.yaml", "--max-calls", "-1"])


def test_global_flags_before_or_after_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    from codemode._cli import build_parser

    for argv in (["--debug", "inspect", "x"], ["inspect", "x", "--debug"], ["inspect", "--debug", "x"]):
        args = build_parser().parse_args(argv)
        assert args.debug is True and args.no_cache is False, argv
    args = build_parser().parse_args(["--no-cache", "inspect", "x"])
    assert args.no_cache is True and args.debug is False


def test_commands_from_installed_plugins(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Other packages add commands through the ``codemode.commands`` entry-point group."""
    import codemode._cli as cli
    from codemode._cli._common import add_command

    class FakeEntryPoint:
        name = "hello"

        def load(self) -> object:
            def register(commands: object) -> None:
                p = add_command(commands, "hello", lambda args: print(f"hi {args.who}") or 0)  # type: ignore[arg-type]
                p.add_argument("who")

            return register

    class Missing:
        name = "broken"

        def load(self) -> object:
            raise ImportError("extra not installed")

    monkeypatch.setattr(cli, "entry_points", lambda group: [FakeEntryPoint(), Missing()])
    assert main(["hello", "you"]) == 0
    assert capsys.readouterr().out == "hi you\n"


def _cli(*argv: str, cwd: Path | None = None, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", str(ROOT))}
    return subprocess.run(
        [sys.executable, "-m", "codemode", *argv], cwd=cwd or ROOT, capture_output=True, text=True, env=env,
        input=stdin, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["serve", "--transport", "http", "--port", "99999"], "99999 is out of range (must be from 1 to 65535)"),
        (["search", "petstore3-openapi.yaml", "pets", "--limit", "0"], "0 is out of range (must be from 1 to 50)"),
        (["search", "petstore3-openapi.yaml", "pets", "--method", "FETCH"], "'FETCH' is not an HTTP method"),
        (["run", "petstore3-openapi.yaml", "x.py", "--timeout", "nan"], "must be a positive number of seconds"),
        (["run", "petstore3-openapi.yaml", "missing.py"], "error [usage.file_not_found]: code file missing.py"),
    ],
)
def test_bad_arguments_are_refused_in_one_line(argv: list[str], needle: str) -> None:
    proc = _cli(*argv)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr


def test_a_busy_port_fails_before_serving_is_announced() -> None:
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        proc = _cli("serve", "--transport", "http", "--port", str(port))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (f"error [config.port_unavailable]: port {port} on 127.0.0.1 is in use; "
                           "pick another with --port\n"), proc.stderr  # fmt: skip
    assert "serving" not in proc.stderr and "terminate called" not in proc.stderr


def test_run_prints_for_people_and_json_on_request(tmp_path: Path) -> None:
    code = "print('hello')\nresult = {'pets': [1, 2]}\n"
    human = _cli("run", "petstore3-openapi.yaml", "-", "--dry-run", cwd=tmp_path, stdin=code)
    assert human.returncode == 0, human.stderr
    assert human.stdout.startswith("hello\nresult = {\n  \"pets\": [\n") and "\\n" not in human.stdout
    raw = _cli("run", "petstore3-openapi.yaml", "-", "--dry-run", "--json", cwd=tmp_path, stdin=code)
    assert json.loads(raw.stdout)["result"] == {"pets": [1, 2]}


def test_every_command_has_help_with_examples() -> None:
    from codemode._cli import build_parser

    parser = build_parser()
    assert "examples:" in parser.format_help()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("serve", "search", "run", "inspect", "install"):
        text = commands.choices[name].format_help()
        assert "examples:" in text and f"codemode {name}" in text.split("examples:")[1], name
        for action in commands.choices[name]._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"


def test_bundled_specs_and_configs_work_by_name_from_any_folder(tmp_path: Path) -> None:
    for target in ("petstore3-openapi.yaml", "servers/petstore.toml", "petstore"):
        proc = _cli("search", target, "find pets by status", "--limit", "1", cwd=tmp_path)
        assert proc.returncode == 0 and "api.pet.find_pets_by_status" in proc.stdout, (target, proc.stderr)


def test_a_plugin_that_takes_a_commands_name_is_skipped_with_a_line(tmp_path: Path) -> None:
    """A third-party ``codemode.commands`` plugin registering ``search`` must not break the CLI."""
    (tmp_path / "clash").mkdir()
    (tmp_path / "clash" / "__init__.py").write_text("def register(commands):\n    commands.add_parser('search')\n")
    info = tmp_path / "clash-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: clash\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[codemode.commands]\nclash = clash:register\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "codemode", "--help"], capture_output=True, text=True, env=env,
                         timeout=120)  # fmt: skip
    assert out.returncode == 0 and "search" in out.stdout, out.stderr
    skipped = "command plugin 'clash' (clash:register) skipped: argument COMMAND: conflicting subparser: search"
    assert skipped in out.stderr
