"""componentize-py entry point of the isolate (guest side only).

Implements the ``run`` export of the ``isolate`` world (see ``../wit``) on top
of :mod:`codemode_guest`; the only way out is the imported ``host.call``.

``time.sleep`` is CPython's own: every WASI wait it makes is answered by the host, which ends
it at the run's deadline (``codemode/_sandbox/_wasi.py``), so there is nothing to guard here.
"""

from __future__ import annotations

import codemode_guest  # type: ignore[import-not-found]  # a top-level module inside the component
from componentize_py_types import Err  # type: ignore[import-not-found]
from wit_world.imports import host  # type: ignore[import-not-found]


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
