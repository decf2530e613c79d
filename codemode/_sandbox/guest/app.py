"""componentize-py entry point of the isolate (guest side only).

Implements the ``run`` export of the ``isolate`` world (see ``../wit``) on top
of :mod:`codemode_guest`; the only way out is the imported ``host.call``.
"""

from __future__ import annotations

import time

import codemode_guest  # type: ignore[import-not-found]  # a top-level module inside the component
from componentize_py_types import Err  # type: ignore[import-not-found]
from wit_world.imports import host  # type: ignore[import-not-found]


def _install_sliced_sleep() -> None:
    """Make ``time.sleep`` sleep in short slices.

    A blocking WASI sleep is not interrupted by the host's epoch deadline, so
    one long sleep would hold a host thread past ``timeout_seconds``. Slices
    return to wasm code often, where the deadline is checked. Runs at build
    time, so the snapshot (and every fresh instance) has it.
    """
    blocking = time.sleep
    monotonic = time.monotonic

    def sleep(seconds: float) -> None:
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        end = monotonic() + seconds
        while (left := end - monotonic()) > 0:
            blocking(min(left, 0.02))

    time.sleep = sleep  # type: ignore[assignment]


_install_sliced_sleep()


def _call(channel: str, payload: str) -> tuple[bool, str]:
    try:
        return True, host.call(channel, payload)
    except Err as err:
        return False, str(err.value)


class WitWorld:
    def run(self, code: str, options: str) -> str:
        try:
            return str(codemode_guest.execute(code, options, _call))
        except Exception as exc:  # noqa: BLE001 - guest-side boundary: an internal failure becomes `err`
            raise Err(f"guest runtime failed: {type(exc).__name__}: {exc}") from None
