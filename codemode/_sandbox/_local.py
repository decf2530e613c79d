"""LocalSandbox: an UNSAFE in-process fake of :class:`WasmSandbox`, for tests only.

.. warning::

   THIS IS NOT A SECURITY BOUNDARY. The code runs in the host interpreter with
   the host's files, network, environment and memory. Module attributes or
   builtins it changes stay changed in the host. There is no timeout and no
   memory limit. Never use it for code you did not write.

It runs the very same guest runtime (``guest/codemode_guest.py``) and bridge
protocol as the isolate, so for ordinary code it produces the same
:class:`RunOutcome` shape, fast, without building the wasm component.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ._protocol import Bridge, RunOutcome, SandboxLimits, code_too_large, guest_options, outcome_from_guest
from .guest import codemode_guest

__all__ = ["LocalSandbox"]


class LocalSandbox:
    """Runs code in-process through the guest runtime. UNSAFE: tests only."""

    def __init__(self, limits: SandboxLimits | None = None) -> None:
        self.limits = limits or SandboxLimits()

    def prepare(self) -> None:
        return None

    def run(
        self,
        code: str,
        bridge: Bridge,
        *,
        inject: Sequence[str] = ("api",),
        limits: SandboxLimits | None = None,
    ) -> RunOutcome:
        limits = limits or self.limits
        rejected = code_too_large(code, limits)
        if rejected is not None:
            return rejected
        options = guest_options(inject, limits)
        start = time.perf_counter()
        answer = codemode_guest.execute(code, options, bridge)
        return outcome_from_guest(answer, limits, (time.perf_counter() - start) * 1e3)
