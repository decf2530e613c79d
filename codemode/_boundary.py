"""What crosses from the host into guest code is scrubbed here, whatever produced it.

The executor passes every upstream body, header and error message, every note and the run's
own outcome through these functions with the run's scrubber (the server's secrets plus the
caller's own), so that an :class:`~codemode._upstream_types.Upstream` that does not scrub (any
other implementation of the seam) cannot hand a secret to the guest, and a secret the guest
reassembled from pieces does not leave in its output.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import replace
from typing import Any

from ._sandbox import GuestError, RunOutcome
from ._scrub import Scrubber
from ._upstream_types import UpstreamResponse

__all__ = ["scrub_body", "scrub_outcome", "scrub_response"]


def scrub_body(scrubber: Scrubber, body: Any) -> Any:
    """JSON data and text as text; binary content (``{"base64": ...}``) as bytes, then re-encoded."""
    if not len(scrubber):
        return body
    if isinstance(body, dict) and set(body) == {"base64", "content_type"} and isinstance(body["base64"], str):
        try:
            raw = base64.b64decode(body["base64"], validate=True)
        except (binascii.Error, ValueError):
            return scrubber.scrub_obj(body)
        charset = _charset(str(body["content_type"]))
        return {
            "base64": base64.b64encode(scrubber.scrub_bytes(raw, charset)).decode("ascii"),
            "content_type": scrubber.scrub_text(str(body["content_type"])),
        }
    return scrubber.scrub_obj(body)


def scrub_response(scrubber: Scrubber, response: UpstreamResponse) -> UpstreamResponse:
    return replace(response, headers=scrubber.scrub_headers(response.headers), body=scrub_body(scrubber, response.body))


def scrub_outcome(scrubber: Scrubber, outcome: RunOutcome) -> RunOutcome:
    if not len(scrubber):
        return outcome
    error = outcome.error
    if error is not None:
        error = GuestError(
            type=scrubber.scrub_text(error.type), message=scrubber.scrub_text(error.message),
            line=error.line, traceback=scrubber.scrub_text(error.traceback),
        )  # fmt: skip
    return replace(
        outcome,
        stdout=scrubber.scrub_text(outcome.stdout),
        result=scrubber.scrub_obj(outcome.result),
        error=error,
        notes=tuple(scrubber.scrub_text(n) for n in outcome.notes),
    )


def _charset(content_type: str) -> str | None:
    for part in content_type.split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip('"') or None
    return None
