"""Turning execution reports into compact, budgeted text for the model.

Search answers are written by :mod:`codemode._answer`; its helpers are re-exported here.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ._answer import approx_tokens, format_hits
from ._execute import ExecuteReport

__all__ = ["approx_tokens", "format_execute", "format_hits"]


def _finite(value: Any) -> Any:
    """JSON has no NaN or Infinity: such floats become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _json(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=str, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(value), ensure_ascii=False, default=str)
    # A lone surrogate (possible in upstream data) cannot be sent as UTF-8: replace it.
    return text.encode("utf-8", "replace").decode("utf-8")


def format_execute(report: ExecuteReport, *, max_chars: int) -> tuple[str, bool]:
    """``(text, is_error)`` for one execution, never longer than ``max_chars``."""
    if report.rejected is not None:
        return f"Code rejected before running (nothing was executed):\n{report.rejected}", True
    if report.busy is not None:
        return f"Server busy (nothing was executed): {report.busy}", True
    out = report.outcome
    assert out is not None
    calls = [c.as_dict() for c in report.calls]
    body: dict[str, Any] = {}
    is_error = not report.ok
    if out.error is not None:
        err = out.error
        where = f" (line {err.line})" if err.line else ""
        body["error"] = f"{err.type}: {err.message}{where}"
        if err.traceback:
            body["traceback"] = err.traceback[-1500:]
    if report.fatal_limits and "error" not in body:
        body["error"] = f"limit reached: {', '.join(report.fatal_limits)}"
    caught = [hit for hit in report.limit_hits if hit not in report.fatal_limits]
    if caught and out.error is None:
        body.setdefault("notes", []).append(f"limit reached and caught by the code: {', '.join(caught)}")
    if out.stdout:
        body["stdout"] = out.stdout
    if out.stdout_truncated:
        body.setdefault("notes", []).append("stdout truncated at max_output_bytes")
    if out.result is not None:
        body["result"] = out.result
    if report.dry_run:
        body.setdefault("notes", []).append("dry run: no request reached the upstream; results were stand-ins")
    body["calls"] = calls
    if out.notes or report.notes:
        body.setdefault("notes", []).extend([*out.notes, *report.notes])
    text = _json(body)
    if len(text) > max_chars:
        text = _shrink(body, max_chars)
    return text, is_error


def _shrink(body: dict[str, Any], max_chars: int) -> str:
    """Cut stdout, then result, then the call log until the answer fits; always valid JSON."""
    body.setdefault("notes", []).append(
        f"answer cut to fit max_response_chars={max_chars}; print less or return a smaller result"
    )
    for key in ("stdout", "result", "calls", "traceback"):
        while key in body:
            excess = len(_json(body)) - max_chars
            if excess <= 0:
                return _json(body)
            value = body[key] if isinstance(body[key], str) else _json(body[key])
            keep = len(value) - excess - 16
            if keep <= 0:
                del body[key]
                body["notes"].append(f"{key} dropped to fit")
            else:
                body[key] = value[:keep] + "…[cut]"
    text = _json(body)
    if len(text) <= max_chars:
        return text
    error = str(body.get("error", "answer too large"))[: max(0, max_chars // 2)]
    return _json({"error": error, "notes": body["notes"][-1:]})
