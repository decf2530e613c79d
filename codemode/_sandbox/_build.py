"""Build and cache the isolate: guest sources -> component (.wasm) -> machine code (.cwasm).

* The component is built with componentize-py from ``guest/*.py`` and
  ``wit/*.wit``. Its cache key is the sha256 of those sources plus the
  componentize-py version.
* The component is compiled for an engine whose config is fixed here
  (:func:`make_engine`); the ``.cwasm`` key adds the wasmtime version and that
  config, because a ``.cwasm`` only loads into an identical engine.
* Each ``.cwasm`` has a ``.sha256`` sidecar checked before loading (wasmtime
  trusts what it deserializes); a mismatch or ``failed to load code`` means
  recompile.
* Writes go to a temporary file and are renamed into place; a lock file keeps
  two processes from building the same thing at once.

Default cache directory: ``$CODEMODE_CACHE_DIR`` or ``~/.cache/codemode``.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import wasmtime
from wasmtime.component import Component

from .._errors import SandboxError
from .._paths import atomic_write, default_cache_dir
from .._progress import Reporter, step

__all__ = [
    "BUILD_STEP",
    "COMPILE_STEP",
    "ENGINE_CONFIG_KEY",
    "component_key",
    "default_cache_dir",
    "ensure_component",
    "ensure_wasm",
    "load_component",
    "make_engine",
]

logger = logging.getLogger("codemode.sandbox")

_HERE = Path(__file__).parent
GUEST_DIR = _HERE / "guest"
WIT_DIR = _HERE / "wit"
WORLD = "isolate"
APP_MODULE = "app"

#: Every engine setting that changes generated code; part of the .cwasm key.
ENGINE_CONFIG_KEY = "epoch_interruption=1;fuel=0"
_BUILD_TIMEOUT_S = 600


def make_engine() -> wasmtime.Engine:
    """The one engine configuration the isolate is compiled for."""
    config = wasmtime.Config()
    config.epoch_interruption = True
    return wasmtime.Engine(config)


def _sources() -> list[Path]:
    guest = sorted(p for p in GUEST_DIR.glob("*.py") if p.name != "__init__.py")
    return guest + sorted(WIT_DIR.glob("*.wit"))


def component_key() -> str:
    """sha256 of the guest sources, the WIT and the componentize-py version."""
    digest = hashlib.sha256()
    digest.update(f"componentize-py={metadata.version('componentize-py')}\n".encode())
    for path in _sources():
        digest.update(f"{path.parent.name}/{path.name}\n".encode())
        digest.update(path.read_bytes())
        digest.update(b"\n")
    return digest.hexdigest()


def _cwasm_key(wasm_key: str) -> str:
    digest = hashlib.sha256(f"{wasm_key}|wasmtime={metadata.version('wasmtime')}|{ENGINE_CONFIG_KEY}".encode())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def _locked(cache_dir: Path, name: str) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / f"{name}.lock").open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _componentize(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="codemode-build-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for path in GUEST_DIR.glob("*.py"):
            if path.name != "__init__.py":
                shutil.copy2(path, src / path.name)
        cmd = [
            sys.executable,
            "-c",
            "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())",
            "-q",
            "-d", str(WIT_DIR),
            "-w", WORLD,
            "componentize", APP_MODULE,
            "-p", str(src),
            "-o", str(Path(tmp) / "out.wasm"),
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S)
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip()[-2000:]
            raise SandboxError(f"componentize-py failed to build the isolate: {detail}", code="sandbox.build")
        atomic_write(out, (Path(tmp) / "out.wasm").read_bytes(), fsync=True)


BUILD_STEP = "building the isolate (componentize-py, once per install)"
COMPILE_STEP = "compiling the isolate to machine code (once per install)"


def ensure_wasm(cache_dir: Path | None = None, progress: Reporter | None = None) -> Path:
    """The component file for the current guest sources, built if missing (reported to ``progress``)."""
    cache_dir = cache_dir or default_cache_dir()
    key = component_key()
    path = cache_dir / f"isolate-{key[:32]}.wasm"
    if path.exists():
        return path
    with _locked(cache_dir, "build"):
        if path.exists():  # another process built it while we waited
            return path
        start = time.perf_counter()
        logger.info("building the isolate component with componentize-py -> %s", path)
        with step(progress, BUILD_STEP):
            _componentize(path)
        logger.info("built %s (%.1f MB) in %.1f s", path.name, path.stat().st_size / 1e6, time.perf_counter() - start)
    return path


def _compile(engine: wasmtime.Engine, wasm: Path, cwasm: Path, progress: Reporter | None = None) -> None:
    start = time.perf_counter()
    logger.info("compiling %s to machine code -> %s", wasm.name, cwasm)
    with step(progress, COMPILE_STEP):
        component = Component.from_file(engine, str(wasm))
        data = bytes(component.serialize())
    atomic_write(cwasm.with_suffix(".sha256"), hashlib.sha256(data).hexdigest().encode(), fsync=True)
    atomic_write(cwasm, data, fsync=True)
    logger.info("compiled %s (%.1f MB) in %.1f s", cwasm.name, len(data) / 1e6, time.perf_counter() - start)


def _cwasm_path(cache_dir: Path) -> Path:
    return cache_dir / f"isolate-{_cwasm_key(component_key())[:32]}.cwasm"


def _cwasm_valid(cwasm: Path) -> bool:
    sidecar = cwasm.with_suffix(".sha256")
    if not (cwasm.exists() and sidecar.exists()):
        return False
    return sidecar.read_text().strip() == _file_sha256(cwasm)


def ensure_component(
    cache_dir: Path | None = None, engine: wasmtime.Engine | None = None, progress: Reporter | None = None
) -> Path:
    """Build (if needed) and compile (if needed) the isolate; return the ``.cwasm`` path.

    Each slow step (build, compile) is reported to ``progress``; a cached isolate reports nothing.
    """
    cache_dir = cache_dir or default_cache_dir()
    cwasm = _cwasm_path(cache_dir)
    if _cwasm_valid(cwasm):
        return cwasm
    wasm = ensure_wasm(cache_dir, progress)
    with _locked(cache_dir, "compile"):
        if not _cwasm_valid(cwasm):
            if cwasm.exists():
                logger.warning("cached %s does not match its checksum; recompiling", cwasm.name)
            _compile(engine or make_engine(), wasm, cwasm, progress)
    return cwasm


def load_component(
    engine: wasmtime.Engine, cache_dir: Path | None = None, progress: Reporter | None = None
) -> Component:
    """Load the compiled isolate into ``engine`` (made by :func:`make_engine`), recovering a bad cache."""
    cache_dir = cache_dir or default_cache_dir()
    cwasm = ensure_component(cache_dir, engine, progress)
    start = time.perf_counter()
    try:
        component = Component.deserialize_file(engine, str(cwasm))
    except wasmtime.WasmtimeError as exc:
        logger.warning("could not load %s (%s); recompiling", cwasm.name, str(exc).splitlines()[0])
        with _locked(cache_dir, "compile"):
            _compile(engine, ensure_wasm(cache_dir, progress), cwasm, progress)
        component = Component.deserialize_file(engine, str(cwasm))
    logger.info("loaded %s in %.1f ms", cwasm.name, (time.perf_counter() - start) * 1e3)
    return component
