"""The portal's place in the repository: imports point portal → engine only, the engine works
without it, and a wheel ships it as ``codemode_portal`` (with its templates and migrations),
never as a top-level ``auth`` or ``servers`` package."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_no_engine_module_imports_the_portal() -> None:
    offenders = [
        str(p.relative_to(ROOT)) for p in (ROOT / "codemode").rglob("*.py") if {"codemode_portal", "auth"} & _imports(p)
    ]
    assert offenders == []


def test_the_portal_imports_only_the_engine_and_libraries() -> None:
    portal = ROOT / "auth" / "codemode_portal"
    files = list(portal.rglob("*.py"))
    assert len(files) > 10
    for p in files:
        assert "auth" not in _imports(p), p


def test_the_engine_imports_and_serves_without_the_portal(tmp_path: Path) -> None:
    # A meta-path hook makes codemode_portal (and everything under it) unimportable.
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'codemode_portal':\n"
        "            raise ImportError('portal blocked for this test')\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    code = (
        "import codemode, codemode._server, codemode._cli\n"
        "from codemode._cli import build_parser\n"
        "p = build_parser()\n"
        "choices = p._subparsers._group_actions[0].choices\n"
        "assert 'serve' in choices and 'portal' not in choices, sorted(choices)\n"
        "try:\n"
        "    import codemode_portal\n"
        "except ImportError:\n"
        "    print('engine ok without portal')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "engine ok without portal" in out.stdout


@pytest.mark.slow
def test_the_wheel_ships_the_portal_as_codemode_portal(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if out.returncode != 0 and "No module named" in out.stderr:
        pytest.skip(f"cannot build a wheel here: {out.stderr[-300:]}")
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next(tmp_path.glob("codemode_mcp-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"codemode", "codemode_portal"}
    for needed in (
        "codemode_portal/__init__.py",
        "codemode_portal/_store/migrations/env.py",
        "codemode_portal/_store/migrations/script.py.mako",
        "codemode_portal/_store/migrations/versions/v0001_initial.py",
        "codemode_portal/templates/consent.html",
        "codemode_portal/static/portal.css",
        "codemode_portal/_oauth/_grants.py",
    ):
        assert needed in names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "portal = codemode_portal._cli:register" in entry_points


def test_connect_works_without_the_portal_extra(tmp_path: Path) -> None:
    """``codemode connect`` is the piece a desktop user installs; it must not need the portal's
    server dependencies (SQLAlchemy, Alembic, Jinja2, argon2), which are made unimportable here."""
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "BLOCKED = {'sqlalchemy', 'alembic', 'jinja2', 'argon2'}  # (python-multipart: mcp needs it too)\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ImportError('portal extra blocked for this test')\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    code = (
        "from codemode._cli import build_parser\n"
        "choices = build_parser()._subparsers._group_actions[0].choices\n"
        "assert 'connect' in choices and 'portal' not in choices, sorted(choices)\n"
        "from codemode_portal._connect import ConnectSettings, bridge\n"
        "import sys\n"
        "assert not any(m.split('.')[0] in ('sqlalchemy', 'jinja2', 'argon2') for m in sys.modules)\n"
        "print('connect ok without the portal extra')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "connect ok without the portal extra" in out.stdout


@pytest.mark.parametrize(
    ("argv", "loaded", "absent"),
    [
        (["serve", "petstore3-openapi.yaml"], [], ["codemode_portal"]),
        (["--debug", "search", "x", "y"], [], ["codemode_portal"]),
        (["--version"], [], ["codemode_portal"]),
        (["portal", "user", "list"], ["portal"], ["codemode_portal._connect._auth"]),
        (["connect", "https://p.example/mcp/x"], ["connect"], ["codemode_portal._cli", "sqlalchemy"]),
        (["--help"], ["portal", "connect"], []),
        (["sevre"], ["portal", "connect"], []),  # a typo: usage lists every command
    ],
)
def test_a_command_imports_only_the_plugin_it_names(argv: list[str], loaded: list[str], absent: list[str]) -> None:
    """A stdio client starts `codemode serve`: it must not pay for importing the portal (about 1 s)."""
    code = (
        "import sys\n"
        "from codemode._cli import build_parser\n"
        f"choices = build_parser({argv!r})._subparsers._group_actions[0].choices\n"
        f"assert all(c in choices for c in {loaded!r}), sorted(choices)\n"
        f"leaked = [m for m in sys.modules if any(m == a or m.startswith(a + '.') for a in {absent!r})]\n"
        "assert not leaked, leaked\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
