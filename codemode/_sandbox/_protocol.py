"""The sandbox interface the rest of codemode codes against.

A :class:`Sandbox` runs model-written Python with a :data:`Bridge` as its only
way out, under :class:`SandboxLimits`, and reports a :class:`RunOutcome`.
This module also turns the guest's JSON answer into a ``RunOutcome`` so every
implementation reports the same shape.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from .guest.codemode_guest import GUEST_MODULES

__all__ = [
    "GUEST_MODULES",
    "Bridge",
    "GuestError",
    "RunOutcome",
    "Sandbox",
    "SandboxLimits",
    "limit_outcome",
    "outcome_from_guest",
]

#: ``(channel, payload_json) -> (ok, payload_json)``. Channels: ``"invoke"``, ``"spec"``.
Bridge = Callable[[str, str], tuple[bool, str]]

#: Channels the guest may use; anything else is refused by the host side.
CHANNELS = frozenset({"invoke", "spec"})


class SandboxLimits(BaseModel):
    """Every limit of one run. All are on by default."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    timeout_seconds: float = Field(default=30.0, gt=0, le=3600, description="wall clock, via epoch interruption")
    memory_mb: int = Field(default=256, ge=16, le=4096, description="linear memory of the isolate")
    max_output_bytes: int = Field(default=64_000, ge=0, description="captured print() output")
    max_result_bytes: int = Field(default=256_000, ge=2, description="JSON of `result`")
    max_code_bytes: int = Field(default=100_000, ge=1, description="source size")


@dataclass(frozen=True)
class GuestError:
    """An error in the model's code. ``line`` is a line of the model's code."""

    type: str
    message: str
    line: int | None
    traceback: str


@dataclass(frozen=True)
class RunOutcome:
    ok: bool
    stdout: str
    stdout_truncated: bool
    result: Any
    error: GuestError | None
    limit: str | None
    duration_ms: float
    notes: tuple[str, ...] = ()


class Sandbox(Protocol):
    def run(
        self,
        code: str,
        bridge: Bridge,
        *,
        inject: Sequence[str] = ("api",),
        limits: SandboxLimits | None = None,
    ) -> RunOutcome: ...

    def prepare(self) -> None: ...


def guest_options(inject: Sequence[str], limits: SandboxLimits) -> str:
    unknown = sorted(set(inject) - {"api", "spec"})
    if unknown:
        raise ValueError(f"inject may only name 'api' and 'spec', not {unknown}")
    return json.dumps(
        {
            "inject": list(inject),
            "max_output_bytes": limits.max_output_bytes,
            "max_result_bytes": limits.max_result_bytes,
        }
    )


def code_too_large(code: str, limits: SandboxLimits) -> RunOutcome | None:
    size = len(code.encode("utf-8", "replace"))
    if size <= limits.max_code_bytes:
        return None
    return limit_outcome(
        "max_code_bytes",
        "CodeTooLarge",
        f"code is {size} bytes, over max_code_bytes={limits.max_code_bytes}; nothing was run",
        0.0,
    )


def limit_outcome(limit: str | None, kind: str, message: str, duration_ms: float, stdout: str = "") -> RunOutcome:
    """An outcome for a run stopped by the host (a limit, a trap, a failure)."""
    return RunOutcome(
        ok=False,
        stdout=stdout,
        stdout_truncated=False,
        result=None,
        error=GuestError(type=kind, message=message, line=None, traceback=f"{kind}: {message}"),
        limit=limit,
        duration_ms=duration_ms,
    )


ANSWER_SLACK_BYTES = 64_000  # error text, traceback and notes beside stdout and result


def outcome_from_guest(answer: str, limits: SandboxLimits, duration_ms: float) -> RunOutcome:
    """Parse the guest's JSON answer (see ``guest/codemode_guest.execute``).

    The caps are enforced again here, on the host: code that tampers with the guest runtime
    must not be able to hand the host more than the limits allow.
    """
    # The guest escapes non-ASCII (so lone surrogates survive): one byte may become six characters.
    ceiling = 6 * (limits.max_output_bytes + limits.max_result_bytes + ANSWER_SLACK_BYTES)
    if len(answer) > ceiling:
        raise ValueError(f"the guest's answer is {len(answer)} characters, over the {ceiling} the limits allow")
    data = json.loads(answer)
    stdout = str(data.get("stdout", ""))
    truncated = bool(data.get("stdout_truncated", False))
    if len(stdout.encode("utf-8", "replace")) > limits.max_output_bytes:
        stdout = stdout.encode("utf-8", "replace")[: limits.max_output_bytes].decode("utf-8", "ignore")
        truncated = True
    if truncated:
        stdout += f"\n[output truncated: print() output exceeded max_output_bytes={limits.max_output_bytes}]"
    raw_error = data.get("error")
    error: GuestError | None = None
    limit: str | None = None
    if isinstance(raw_error, dict):
        line = raw_error.get("line")
        error = GuestError(
            type=str(raw_error.get("type", "Error")),
            message=str(raw_error.get("message", "")),
            line=line if isinstance(line, int) else None,
            traceback=str(raw_error.get("traceback", "")),
        )
        limit = raw_error.get("limit") if isinstance(raw_error.get("limit"), str) else None
    notes = tuple(str(n) for n in data.get("notes", ()))
    return RunOutcome(
        ok=error is None,
        stdout=stdout,
        stdout_truncated=truncated,
        result=data.get("result") if error is None else None,
        error=error,
        limit=limit,
        duration_ms=duration_ms,
        notes=notes,
    )
