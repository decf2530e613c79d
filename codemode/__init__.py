"""codemode-mcp: any OpenAPI spec becomes an MCP server with two tools, ``search`` and ``execute``."""

from __future__ import annotations

__version__ = "0.1.0"

from ._access import AccessHook, Caller, CredentialSource
from ._cache import load_spec
from ._errors import (
    CallError,
    CodemodeError,
    ConfigError,
    RuntimeFailure,
    SandboxError,
    SpecError,
    UpstreamError,
    UsageError,
)
from ._ir import ApiSpec, Body, Operation, Param, Response, SecurityScheme, SpecWarning
from ._upstream_types import AuditEvent, AuditHook

__all__ = [
    "AccessHook",
    "ApiSpec",
    "AuditEvent",
    "AuditHook",
    "Body",
    "CallError",
    "Caller",
    "CodemodeError",
    "ConfigError",
    "CredentialSource",
    "Operation",
    "Param",
    "Response",
    "RuntimeFailure",
    "SandboxError",
    "SecurityScheme",
    "SpecError",
    "SpecWarning",
    "UpstreamError",
    "UsageError",
    "__version__",
    "load_spec",
]
