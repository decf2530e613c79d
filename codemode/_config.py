"""Server configuration files (``servers/*.toml``): a spec plus its validated settings.

``${NAME}`` in any string value is replaced by the environment variable ``NAME``
when the file is loaded, so secrets stay out of the file; a missing variable is
an error that names it and the file.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ._errors import ConfigError
from ._settings import ServerSettings

__all__ = ["expand_env", "load_server_config", "server_config_spec"]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(text: str, env: Mapping[str, str], where: str) -> str:
    """Replace each ``${NAME}`` in ``text`` by the environment variable; a missing one is an error."""

    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in env:
            raise ConfigError(
                f"{where}: environment variable {m.group(1)} is not set (used as ${{{m.group(1)}}}).",
                code="config.missing_env",
            )
        return env[m.group(1)]

    return _VAR.sub(sub, text)


def _expand(value: Any, env: Mapping[str, str], where: str) -> Any:
    if isinstance(value, str):
        return expand_env(value, env, where)
    if isinstance(value, dict):
        return {k: _expand(v, env, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, env, where) for v in value]
    return value


def _read(path: Path) -> tuple[str, dict[str, Any]]:
    """The spec source a config names (relative to the file) and the rest of its tables."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"server config {path} does not exist.", code="config.not_found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read server config {path}: {exc}.", code="config.parse") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"server config {path} is not valid TOML: {exc}.", code="config.parse") from None
    table = data.pop("server", {})
    if not isinstance(table, dict):
        kind = type(table).__name__
        raise ConfigError(f"{path}: server must be a table ([server]), not a {kind}.", code="config.parse")
    server = dict(table)
    spec = server.pop("spec", None)
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f'{path}: [server] needs spec = "path, folder or URL".', code="config.no_spec")
    if not spec.startswith(("http://", "https://")):
        spec = str((path.parent / spec).resolve())
    return spec, {**server, **data}


def server_config_spec(path: Path) -> str:
    """Only the spec source a server config names (no settings, no environment read)."""
    return _read(path)[0]


def load_server_config(path: Path, env: Mapping[str, str] | None = None) -> tuple[str, ServerSettings]:
    """``(spec source, settings)`` from a TOML file. The spec path is relative to the file."""
    env = os.environ if env is None else env
    spec, tables = _read(path)
    raw = _expand(tables, env, str(path))
    try:
        settings = ServerSettings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}.", code="config.invalid") from None
    return spec, settings
