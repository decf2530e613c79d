"""``codemode warmup``: build and compile the wasm isolate ahead of time."""

from __future__ import annotations

import argparse
import time

from ._common import Commands, add_command

__all__ = ["register"]


def register(commands: Commands) -> None:
    add_command(commands, "warmup", run, help="build and compile the wasm isolate ahead of time")


def run(args: argparse.Namespace) -> int:
    from .._sandbox import WasmSandbox

    started = time.perf_counter()
    WasmSandbox().prepare()
    print(f"isolate ready in {time.perf_counter() - started:.1f} s")
    return 0
