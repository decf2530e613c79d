"""The error hierarchy of codemode.

Every error carries a machine-readable ``code``. Usage errors (bad input from
the person or model driving codemode) are kept apart from runtime failures
(something outside went wrong). Messages are one paragraph and name *what* is
wrong and *where*; they never contain secrets or request payloads.

    CodemodeError
    ├── UsageError             bad input: a spec, an argument, a setting
    │   ├── SpecError          a spec that cannot be served (code: spec.*)
    │   ├── ConfigError        an invalid setting (code: config.*)
    │   └── CallError          a bad call from guest code (code: call.*)
    └── RuntimeFailure         the outside world failed
        ├── UpstreamError      the upstream API failed (code: upstream.*)
        ├── SandboxError       the isolate could not run (code: sandbox.*)
        └── ServerBusy         no execution slot freed in time (code: server.*)
"""

from __future__ import annotations

__all__ = [
    "CallError",
    "CodemodeError",
    "ConfigError",
    "RuntimeFailure",
    "SandboxError",
    "ServerBusy",
    "SpecError",
    "UpstreamError",
    "UsageError",
]


class CodemodeError(Exception):
    """Base class. ``code`` is stable and machine-readable, e.g. ``spec.not_found``."""

    code: str = "codemode.error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class UsageError(CodemodeError):
    code = "usage.error"


class SpecError(UsageError):
    """The spec cannot be served. ``where`` is a file, URL or JSON pointer."""

    code = "spec.invalid"

    def __init__(self, message: str, *, code: str | None = None, where: str | None = None) -> None:
        super().__init__(message, code=code)
        self.where = where


class ConfigError(UsageError):
    code = "config.invalid"


class CallError(UsageError):
    """Guest code called the API wrongly (unknown operation, bad arguments, not allowed)."""

    code = "call.invalid"


class RuntimeFailure(CodemodeError):
    code = "runtime.failure"


class UpstreamError(RuntimeFailure):
    """The upstream API answered with an error or could not be reached."""

    code = "upstream.error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        body: object = None,
        operation: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.body = body
        self.operation = operation


class SandboxError(RuntimeFailure):
    code = "sandbox.error"


class ServerBusy(RuntimeFailure):
    """Every execution slot stayed taken for the whole bounded wait (see :mod:`codemode._admission`)."""

    code = "server.busy"
