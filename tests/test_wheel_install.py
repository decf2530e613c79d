"""`pip install` is a first-class route: the built wheel, installed into a fresh venv, serves the bundled
spec from another folder, and `execute` works on the first call with an empty cache (the isolate is built
then, before the call's deadline starts). The README's other routes, `pipx install` (with either of its
backends) and `uvx --from`, are run the same way.

Nothing here reaches a package index: dependencies come from ``.cache/wheelhouse``, which
``scripts/setup-wheelhouse.sh`` (``make setup-test``) fills, and every install is ``--no-index``."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from mcp import types
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from codemode._paths import default_cache_dir
from codemode._sandbox._build import BUILD_STEP, COMPILE_STEP

ROOT = Path(__file__).resolve().parents[1]
WHEELHOUSE = ROOT / ".cache" / "wheelhouse"
TOOLS = Path(sys.executable).parent  # the dev venv: pipx and uv come with the `dev` extra
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheelhouse() -> Path:
    if not (WHEELHOUSE / ".complete").exists():
        pytest.skip("no .cache/wheelhouse: run `make setup-test` (scripts/setup-wheelhouse.sh)")
    for tool in ("pipx", "uvx"):
        if not (TOOLS / tool).exists():
            pytest.skip(f"{tool} is not in {TOOLS}: run `make setup` (the `dev` extra installs pipx and uv)")
    return WHEELHOUSE


def _isolated_env(home: Path, **extra: str) -> dict[str, str]:
    """A user's environment with nothing of the dev venv or this machine's package settings in it."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "PIP_CONFIG_FILE": os.devnull, "LANG": "C.UTF-8", **extra}


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


async def test_a_fresh_venv_serves_the_bundled_spec_and_executes_on_the_first_call(
    wheel: Path, wheelhouse: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-index",
         "--find-links", str(wheelhouse), str(wheel)],
        env=_isolated_env(tmp_path), capture_output=True, text=True, timeout=900,
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
    progress: list[tuple[float, float | None, str | None]] = []
    lines: list[tuple[str, Any]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        lines.append((params.level, params.data))

    with (tmp_path / "server.log").open("w") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write, logging_callback=on_log, log_level="info") as session,
        ):
            await asyncio.wait_for(session.initialize(), 120)
            result = await asyncio.wait_for(
                session.call_tool(
                    "execute",
                    {"code": "pets = api.pet.find_pets_by_status(status='sold')\nresult = pets[0]['name']",
                     "dry_run": True},
                    progress_callback=on_progress,
                ),
                600,  # the first call builds the isolate: tens of seconds on a loaded 2-core machine
            )  # fmt: skip
    text = result.content[0].text  # type: ignore[union-attr]
    assert not result.is_error, text
    assert json.loads(text)["result"] == "doggie"  # the spec's own example
    assert any(cache.rglob("*.cwasm")), "the isolate was built into the (empty) cache"
    # The client that sent a progress token heard about the build while it waited (it took well over
    # the 2 s a step may stay silent): notifications/progress with increasing values, a heartbeat at
    # least every second, and a start and an end line of each step in notifications/message.
    messages = [m or "" for _, _, m in progress]
    assert any(m.startswith(BUILD_STEP) for m in messages), messages[:5]
    assert any(m.startswith(f"{COMPILE_STEP}: done in") for m in messages), messages[-5:]
    values = [p for p, _, _ in progress]
    assert all(b > a for a, b in itertools.pairwise(values)), values  # on one token, across both steps
    ticks = [m for m in messages if m.startswith(f"{BUILD_STEP}: ") and "done" not in m]
    assert len(ticks) >= 2, messages[:10]  # a build takes several seconds: the heartbeat spoke meanwhile
    logged = [str(data) for level, data in lines if level == "info"]
    for name in (BUILD_STEP, COMPILE_STEP):
        assert f"{name}…" in logged, logged
        assert any(text.startswith(f"{name}: done in") for text in logged), logged
    assert os.environ.get("CODEMODE_CACHE_DIR") != str(cache)


async def _serve_and_execute(command: str, args: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
    """``codemode serve`` (the bundled Petstore spec) over stdio, as an MCP client starts it; a dry run."""
    params = StdioServerParameters(command=command, args=args, env=env, cwd=cwd)
    with log.open("w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            init = await asyncio.wait_for(session.initialize(), 180)
            assert init.server_info.name == "petstore" and init.server_info.version == "0.1.0", init.server_info
            code = "result = api.pet.find_pets_by_status(status='sold')[0]['name']"
            result = await asyncio.wait_for(
                session.call_tool("execute", {"code": code, "dry_run": True}),
                600,  # the isolate is reused from the dev cache when the guest is the same; else built here
            )
    text = result.content[0].text  # type: ignore[union-attr]
    assert not result.is_error, text
    assert json.loads(text)["result"] == "doggie"


@pytest.mark.parametrize("backend", ["pip", "uv"])
async def test_pipx_installs_the_wheel_and_its_codemode_serves_from_another_folder(
    wheel: Path, wheelhouse: Path, tmp_path: Path, backend: str
) -> None:
    """``pipx install <wheel>``: pipx 1.18 picks the uv backend when uv is there, pip otherwise; both."""
    home, bin_dir = tmp_path / "home", tmp_path / "bin"
    env = _isolated_env(home, PIPX_HOME=str(tmp_path / "pipx"), PIPX_BIN_DIR=str(bin_dir),
                        PIPX_MAN_DIR=str(tmp_path / "man"), UV_NO_CONFIG="1", UV_CACHE_DIR=str(tmp_path / "uv"),
                        UV_PYTHON_DOWNLOADS="never")  # fmt: skip
    install = subprocess.run(
        [str(TOOLS / "pipx"), "install", "--backend", backend, "--python", sys.executable,
         f"--pip-args=--no-index --find-links={wheelhouse}", str(wheel)],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-3000:]
    codemode = bin_dir / "codemode"
    assert codemode.exists(), install.stdout
    shebang = codemode.resolve().read_text(errors="replace").splitlines()[0]
    assert str(tmp_path / "pipx" / "venvs" / "codemode-mcp") in shebang, shebang  # pipx's own venv, not ours
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run_env = {**env, "PATH": f"{bin_dir}:/usr/bin:/bin", "CODEMODE_CACHE_DIR": str(default_cache_dir())}
    search = subprocess.run(
        [str(codemode), "search", "petstore", "find pets by status", "--limit", "1"],
        cwd=elsewhere, env=run_env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert search.returncode == 0 and "api.pet.find_pets_by_status" in search.stdout, search.stderr
    await _serve_and_execute(str(codemode), ["serve"], run_env, elsewhere, tmp_path / "server.log")


async def test_uvx_runs_the_wheel_offline_from_another_folder(wheel: Path, wheelhouse: Path, tmp_path: Path) -> None:
    """``uvx --from <wheel> codemode …``, the way an MCP client config would start it, with an empty uv cache."""
    env = _isolated_env(tmp_path / "home", UV_NO_CONFIG="1", UV_CACHE_DIR=str(tmp_path / "uv-cache"),
                        UV_TOOL_DIR=str(tmp_path / "uv-tools"), UV_PYTHON=sys.executable, UV_PYTHON_DOWNLOADS="never",
                        CODEMODE_CACHE_DIR=str(default_cache_dir()))  # fmt: skip
    uvx = [str(TOOLS / "uvx"), "--offline", "--no-index", "--find-links", str(wheelhouse), "--from", str(wheel)]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    search = subprocess.run(
        [*uvx, "codemode", "search", "petstore", "find pets by status", "--limit", "1"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert search.returncode == 0 and "api.pet.find_pets_by_status" in search.stdout, search.stderr[-3000:]
    assert any((tmp_path / "uv-cache").rglob("codemode_mcp*")), "uv installed the wheel into its own cache"
    await _serve_and_execute(uvx[0], [*uvx[1:], "codemode", "serve"], env, elsewhere, tmp_path / "server.log")
