"""Real upstream APIs on loopback for end-to-end tests: httpbin and Kinto.

Each server runs as a subprocess from ``.venv-upstreams`` (``scripts/setup-upstreams.sh``;
``CODEMODE_UPSTREAMS_VENV`` points elsewhere) on a free 127.0.0.1 port. The context
managers wait until the server answers, and stop it (its whole process group) on exit.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NamedTuple

import httpx
import pytest

__all__ = [
    "RunningServer",
    "ServerInfo",
    "free_port",
    "httpbin_server",
    "kinto_server",
    "serve_subprocess",
    "upstreams_bin",
]

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_SECONDS = 30.0
SKIP_REASON = "upstream servers not installed: run scripts/setup-upstreams.sh"


@dataclass(frozen=True)
class ServerInfo:
    spec_url: str
    username: str = ""
    password: str = field(default="", repr=False)
    root_url: str = ""


class RunningServer(NamedTuple):
    base_url: str
    info: ServerInfo


def upstreams_bin(tool: str) -> Path:
    """Path of a binary in the upstreams venv; skips the test when it is missing."""
    venv = Path(os.environ.get("CODEMODE_UPSTREAMS_VENV") or ROOT / ".venv-upstreams")
    path = venv / "bin" / tool
    if not path.exists():
        pytest.skip(SKIP_REASON)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(log: IO[bytes], lines: int = 25) -> str:
    log.flush()
    log.seek(0)
    text = log.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def serve_subprocess(
    name: str, argv: Sequence[str | Path], ready_url: str, *, cwd: Path | None = None
) -> Iterator[None]:
    """Run ``argv`` until the block ends; wait for ``ready_url`` to answer 2xx first."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [str(a) for a in argv],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: workers are stopped with it
        )
        try:
            _wait_ready(name, proc, ready_url, log)
            yield
        finally:
            _stop(proc)


def _wait_ready(name: str, proc: subprocess.Popen[bytes], url: str, log: IO[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    last = "no answer yet"
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {proc.returncode} before it was ready;"
                    f" its output ends with:\n{_tail(log)}"
                )
            try:
                if client.get(url).is_success:
                    return
                last = "not ready"
            except httpx.TransportError as exc:
                last = type(exc).__name__
            time.sleep(0.05)
    raise RuntimeError(
        f"{name} did not answer {url} within {READY_TIMEOUT_SECONDS:g} s ({last}); its output ends with:\n{_tail(log)}"
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)  # the group this helper started, by its id
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def httpbin_server() -> Iterator[RunningServer]:
    """httpbin under gunicorn; ``info.spec_url`` is its Swagger 2.0 ``/spec.json``."""
    gunicorn = upstreams_bin("gunicorn")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv: list[str | Path] = [
        gunicorn,
        "-b",
        f"127.0.0.1:{port}",
        "-w",
        "2",
        "--log-level",
        "warning",
        "httpbin:app",
    ]
    with serve_subprocess("httpbin", argv, f"{base}/get"):
        yield RunningServer(base, ServerInfo(spec_url=f"{base}/spec.json", root_url=base))


@contextlib.contextmanager
def kinto_server() -> Iterator[RunningServer]:
    """Kinto with memory backends and the accounts plugin, plus an ``admin`` account.

    ``base_url`` is the API root (``…/v1``, the spec's basePath); ``info`` carries the
    admin's basic-auth username and password and the spec URL.
    """
    kinto = upstreams_bin("kinto")
    port = free_port()
    root = f"http://127.0.0.1:{port}"
    base = f"{root}/v1"
    with tempfile.TemporaryDirectory(prefix="codemode-kinto-") as tmp:
        ini = Path(tmp) / "kinto.ini"
        init = subprocess.run(
            [str(kinto), "init", "--ini", str(ini), "--backend", "memory",
             "--cache-backend", "memory", "--host", "127.0.0.1"],
            cwd=tmp, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        if init.returncode != 0:
            raise RuntimeError(f"kinto init failed ({init.returncode}):\n{init.stderr[-2000:]}")
        _enable_accounts(ini)
        argv: list[str | Path] = [kinto, "start", "--ini", ini, "--port", str(port)]
        with serve_subprocess("kinto", argv, f"{base}/__heartbeat__", cwd=Path(tmp)):
            password = secrets.token_urlsafe(16)
            with httpx.Client(timeout=10.0, trust_env=False) as client:
                created = client.put(f"{base}/accounts/admin", json={"data": {"password": password}})
            if not created.is_success:
                raise RuntimeError(f"creating the Kinto admin account gave {created.status_code}")
            info = ServerInfo(
                spec_url=f"{base}/__api__",
                username="admin",
                password=password,
                root_url=root,
            )
            yield RunningServer(base, info)


def _enable_accounts(ini: Path) -> None:
    """Turn on the accounts plugin and policy (``kinto init`` 26.5 already does both)."""
    lines = ini.read_text().splitlines()
    section = lines.index("[app:main]")
    app = {line.split("=", 1)[0].strip(): i for i, line in enumerate(lines) if "=" in line}
    wanted = {
        "multiauth.policies": "account",
        "multiauth.policy.account.use": "kinto.plugins.accounts.AccountsPolicy",
        "kinto.account_create_principals": "system.Everyone",
        "kinto.account_write_principals": "account:admin",
        "kinto.bucket_create_principals": "account:admin",
    }
    for key, value in wanted.items():
        if key not in app:
            lines.insert(section + 1, f"{key} = {value}")
    if "kinto.includes" not in app:
        lines.insert(section + 1, "kinto.includes = kinto.plugins.accounts")
    else:
        start = next(i for i, line in enumerate(lines) if line.startswith("kinto.includes"))
        end = start + 1
        while end < len(lines) and lines[end][:1] in (" ", "\t"):
            end += 1
        if "kinto.plugins.accounts" not in " ".join(lines[start:end]):
            lines[start] += " kinto.plugins.accounts"
    ini.write_text("\n".join(lines) + "\n")
