"""`pip install` is a first-class route: the built wheel, installed into a fresh venv, serves the bundled
spec from another folder, and `execute` works on the first call with an empty cache (the isolate is built
then, before the call's deadline starts)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--disable-pip-version-check", "-w", str(out),
         str(ROOT)],
        check=True, timeout=600, capture_output=True,
    )  # fmt: skip
    (found,) = out.glob("codemode_mcp-*.whl")
    return found


def test_the_wheel_ships_what_the_cli_promises_and_nothing_at_the_top_level_it_should_not(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("codemode/_bundled/specs/petstore3-openapi.yaml", "codemode/_bundled/specs/LICENSES.md",
                   "codemode/_bundled/servers/kinto.toml", "codemode/_sandbox/wit/world.wit",
                   "codemode/_sandbox/guest/codemode_guest.py"):  # fmt: skip
        assert needed in names, needed
    top = {n.split("/", 1)[0] for n in names if "/" in n and not n.split("/", 1)[0].endswith(".dist-info")}
    assert top <= {"codemode", "codemode_portal"}, top  # never `servers`, `specs`, `auth` or `tests`


async def test_a_fresh_venv_serves_the_bundled_spec_and_executes_on_the_first_call(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cache = tmp_path / "empty-cache"
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "CODEMODE_CACHE_DIR": str(cache)}
    search = subprocess.run(
        [str(venv / "bin" / "codemode"), "search", "petstore", "find pets by status", "--limit", "1"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert search.returncode == 0 and "api.pet.find_pets_by_status" in search.stdout, search.stderr
    params = StdioServerParameters(command=str(venv / "bin" / "codemode"), args=["serve"], env=env, cwd=elsewhere)
    with (tmp_path / "server.log").open("w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await asyncio.wait_for(session.initialize(), 120)
            result = await asyncio.wait_for(
                session.call_tool(
                    "execute",
                    {"code": "pets = api.pet.find_pets_by_status(status='sold')\nresult = pets[0]['name']",
                     "dry_run": True},
                ),
                600,  # the first call builds the isolate: tens of seconds on a loaded 2-core machine
            )  # fmt: skip
    text = result.content[0].text  # type: ignore[union-attr]
    assert not result.is_error, text
    assert json.loads(text)["result"] == "doggie"  # the spec's own example
    assert any(cache.rglob("*.cwasm")), "the isolate was built into the (empty) cache"
    assert os.environ.get("CODEMODE_CACHE_DIR") != str(cache)
