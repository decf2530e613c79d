"""Errors of ``codemode connect`` (code: ``connect.*``), on the engine's hierarchy.

CodemodeError
├── UsageError
│   └── ConnectUsageError     a bad URL or option (connect.usage.*)
└── RuntimeFailure
    └── ConnectError          the portal, the network, the sign-in or the token file failed (connect.*)
        └── AuthorizationFailed   sign-in did not complete: denied, timed out, refused (connect.auth.*)
"""

from __future__ import annotations

from codemode import CodemodeError
from codemode._errors import RuntimeFailure, UsageError

__all__ = ["AuthorizationFailed", "CodemodeError", "ConnectError", "ConnectUsageError"]


class ConnectUsageError(UsageError):
    code = "connect.usage"


class ConnectError(RuntimeFailure):
    code = "connect.error"


class AuthorizationFailed(ConnectError):
    code = "connect.auth"
