"""The host's own implementation of every WASI interface through which guest code can wait.

Wasmtime's WASI waits (``wasi:io/poll``: a pollable's ``block`` and ``poll``) run inside the
host call, where the epoch deadline cannot reach: guest code that reached the original
``time.sleep`` (or anything else that ends in ``poll``) could hold a host thread for as long
as it asked, far past ``timeout_seconds``. So the host answers those calls itself:

* ``wasi:clocks/monotonic-clock`` (``now``, ``subscribe-duration``, ``subscribe-instant``)
  and ``wasi:io/poll`` are implemented here. Every wait ends at the run's deadline at the
  latest; a wait cut by the deadline stops the run with a trap carrying :data:`WAIT_TIMEOUT`,
  which :mod:`._wasm` reports as ``timeout_seconds``. Closing the sandbox ends every wait.
* Pollables are a resource type, so every interface whose functions return one is answered
  here too: ``wasi:io/streams`` (stdin is empty, stdout and stderr discard what they get:
  the guest captures ``print`` itself), ``wasi:cli/std*``, ``wasi:filesystem`` (no
  directories are open) and ``wasi:sockets`` (every socket is refused with
  ``access-denied``). Functions that need a resource that can never exist here (a file
  descriptor, a socket) trap if called.

What stays wasmtime's own: the wall clock, random numbers, environment and arguments (empty,
from an empty ``WasiConfig``), exit, and terminals (none). None of them can wait.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import wasmtime
from wasmtime.component import (
    Component,
    ComponentInstanceType,
    FuncType,
    Linker,
    ResourceAny,
    ResourceHost,
    ResourceType,
    ResultType,
    Variant,
    VariantType,
)

__all__ = ["SHADOWED_INTERFACES", "WAIT_TIMEOUT", "HostWasi"]

#: Text of the trap that ends a run whose guest waited past its deadline.
WAIT_TIMEOUT = "codemode: the code waited past its deadline"
#: Interfaces (without version) answered by :class:`HostWasi` instead of wasmtime.
SHADOWED_INTERFACES = (
    "wasi:io/poll", "wasi:io/error", "wasi:io/streams", "wasi:clocks/monotonic-clock",
    "wasi:cli/stdin", "wasi:cli/stdout", "wasi:cli/stderr",
    "wasi:filesystem/types", "wasi:filesystem/preopens",
    "wasi:sockets/network", "wasi:sockets/instance-network", "wasi:sockets/tcp", "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp", "wasi:sockets/udp-create-socket", "wasi:sockets/ip-name-lookup",
)  # fmt: skip
# Host resource type ids (any distinct integers); each resource name is one type in every interface.
_RESOURCE_IDS = {
    name: 0xC0DE00 + i
    for i, name in enumerate((
        "pollable", "error", "input-stream", "output-stream", "descriptor", "directory-entry-stream", "network",
        "tcp-socket", "udp-socket", "incoming-datagram-stream", "outgoing-datagram-stream", "resolve-address-stream",
    ))
}  # fmt: skip
_STDIN, _STDOUT, _STDERR = 1, 2, 3
_READY = -math.inf  # the wake-up time of a pollable that is always ready
_MAX_WRITE = 1 << 16  # what check-write allows per write to a discarding stream


class _Waits(threading.local):
    """Per thread (one run at a time per thread): the run's deadline and its pollables."""

    deadline: float = math.inf
    pollables: dict[int, float]
    next_rep: int = 0

    def __init__(self) -> None:
        self.pollables = {}


class HostWasi:
    """Installs the waiting half of WASI into a component linker; see the module docstring.

    ``closing`` is the sandbox's stop signal: when set, every wait ends (as a timeout).
    """

    def __init__(self, closing: threading.Event) -> None:
        self._closing = closing
        self._waits = _Waits()

    # -- per run -----------------------------------------------------------------
    def begin(self, deadline: float) -> None:
        """The calling thread is about to run a store whose waits end at ``deadline`` (monotonic)."""
        self._waits.deadline = deadline
        self._waits.pollables = {}
        self._waits.next_rep = 0

    def end(self) -> None:
        self._waits.deadline = math.inf
        self._waits.pollables = {}

    # -- wiring --------------------------------------------------------------------
    def install(self, linker: Linker, component: Component, engine: wasmtime.Engine) -> None:
        """Shadow the interfaces of :data:`SHADOWED_INTERFACES` that ``component`` imports.

        Call after ``linker.add_wasip2()``. Every function the component imports from them is
        defined: by :meth:`_implementations`, or as a trap.
        """
        implementations = self._implementations()
        linker.allow_shadowing = True
        with linker.root() as root:
            for name, extern in component.type.imports(engine).items():
                interface = name.split("@", 1)[0]
                interface_type = extern.ty
                if interface not in SHADOWED_INTERFACES or not isinstance(interface_type, ComponentInstanceType):
                    continue
                with root.add_instance(name) as instance:
                    for item, export in interface_type.exports(engine).items():
                        ty = export.ty
                        if isinstance(ty, ResourceType):
                            if item not in _RESOURCE_IDS:
                                raise wasmtime.WasmtimeError(f"unknown WASI resource {item!r} in {name}")
                            drop = self._drop_pollable if item == "pollable" else _drop_nothing
                            instance.add_resource(item, ResourceType.host(_RESOURCE_IDS[item]), drop)
                        elif isinstance(ty, FuncType):
                            func = implementations.get((interface, item)) or _unavailable(interface, item)
                            instance.add_func(item, _host_func(func, ty.result, f"{interface} {item}"))
        linker.allow_shadowing = False

    def _implementations(self) -> dict[tuple[str, str], Callable[..., Any]]:
        ready = self._ready_pollable
        return {
            ("wasi:io/poll", "[method]pollable.ready"): self._is_ready,
            ("wasi:io/poll", "[method]pollable.block"): self._block,
            ("wasi:io/poll", "poll"): self._poll,
            ("wasi:clocks/monotonic-clock", "now"): lambda _s: time.monotonic_ns(),
            ("wasi:clocks/monotonic-clock", "resolution"): lambda _s: 1,
            ("wasi:clocks/monotonic-clock", "subscribe-duration"): self._subscribe_duration,
            ("wasi:clocks/monotonic-clock", "subscribe-instant"): self._subscribe_instant,
            ("wasi:io/streams", "[method]input-stream.read"): _closed,
            ("wasi:io/streams", "[method]input-stream.blocking-read"): _closed,
            ("wasi:io/streams", "[method]input-stream.skip"): _closed,
            ("wasi:io/streams", "[method]input-stream.blocking-skip"): _closed,
            ("wasi:io/streams", "[method]input-stream.subscribe"): ready,
            ("wasi:io/streams", "[method]output-stream.check-write"): lambda _s, _self: _Ok(_MAX_WRITE),
            ("wasi:io/streams", "[method]output-stream.write"): _ok,
            ("wasi:io/streams", "[method]output-stream.blocking-write-and-flush"): _ok,
            ("wasi:io/streams", "[method]output-stream.flush"): _ok,
            ("wasi:io/streams", "[method]output-stream.blocking-flush"): _ok,
            ("wasi:io/streams", "[method]output-stream.write-zeroes"): _ok,
            ("wasi:io/streams", "[method]output-stream.blocking-write-zeroes-and-flush"): _ok,
            ("wasi:io/streams", "[method]output-stream.subscribe"): ready,
            ("wasi:cli/stdin", "get-stdin"): lambda _s: ResourceHost.own(_STDIN, _RESOURCE_IDS["input-stream"]),
            ("wasi:cli/stdout", "get-stdout"): lambda _s: ResourceHost.own(_STDOUT, _RESOURCE_IDS["output-stream"]),
            ("wasi:cli/stderr", "get-stderr"): lambda _s: ResourceHost.own(_STDERR, _RESOURCE_IDS["output-stream"]),
            ("wasi:filesystem/preopens", "get-directories"): lambda _s: [],
            ("wasi:filesystem/types", "filesystem-error-code"): lambda _s, _err: None,
            ("wasi:sockets/instance-network", "instance-network"): lambda _s: ResourceHost.own(
                1, _RESOURCE_IDS["network"]
            ),
            ("wasi:sockets/tcp-create-socket", "create-tcp-socket"): _denied,
            ("wasi:sockets/udp-create-socket", "create-udp-socket"): _denied,
            ("wasi:sockets/ip-name-lookup", "resolve-addresses"): _denied,
        }

    # -- pollables -----------------------------------------------------------------
    def _new_pollable(self, wake_at: float) -> ResourceHost:
        waits = self._waits
        waits.next_rep += 1
        waits.pollables[waits.next_rep] = wake_at
        return ResourceHost.own(waits.next_rep, _RESOURCE_IDS["pollable"])

    def _ready_pollable(self, _store: object, _self: object) -> ResourceHost:
        return self._new_pollable(_READY)

    def _subscribe_duration(self, _store: object, nanoseconds: int) -> ResourceHost:
        return self._new_pollable(time.monotonic() + nanoseconds / 1e9)

    def _subscribe_instant(self, _store: object, instant_ns: int) -> ResourceHost:
        return self._new_pollable(instant_ns / 1e9)  # the same clock as ``now``: time.monotonic_ns()

    def _drop_pollable(self, _store: object, rep: int) -> None:
        self._waits.pollables.pop(rep, None)

    def _wake_at(self, rep: int) -> float:
        return self._waits.pollables.get(rep, _READY)

    def _is_ready(self, _store: object, rep: int) -> bool:
        return self._wake_at(rep) <= time.monotonic()

    def _block(self, _store: object, rep: int) -> None:
        self._wait_until(self._wake_at(rep))

    def _poll(self, _store: object, reps: list[int]) -> list[int]:
        if not reps:
            raise wasmtime.WasmtimeError("codemode: poll() of an empty list")
        times = [self._wake_at(rep) for rep in reps]
        self._wait_until(min(times))
        now = time.monotonic()
        return [i for i, wake_at in enumerate(times) if wake_at <= now]

    def _wait_until(self, wake_at: float) -> None:
        """Sleep until ``wake_at``, never past the run's deadline; at the deadline, stop the run."""
        deadline = self._waits.deadline
        now = time.monotonic()
        if wake_at <= now:
            return
        while (left := min(wake_at, deadline) - now) > 0:  # Event.wait may wake a little early
            if self._closing.wait(min(left, threading.TIMEOUT_MAX)):
                raise wasmtime.WasmtimeError(WAIT_TIMEOUT)
            now = time.monotonic()
        if now >= deadline:
            raise wasmtime.WasmtimeError(WAIT_TIMEOUT)


class _Ok:
    __slots__ = ("value",)

    def __init__(self, value: Any = None) -> None:
        self.value = value


class _Err(_Ok):
    __slots__ = ()


_CLOSED = object()  # the ``closed`` case of ``stream-error``


def _lower(ty: Any, value: Any) -> Any:
    """The Python value wasmtime-py lowers into ``ty``: results and variants are tagged only when ambiguous."""
    if isinstance(value, _Ok) and isinstance(ty, ResultType):
        inner = ty.err if isinstance(value, _Err) else ty.ok
        payload = None if inner is None else _lower(inner, value.value)
        return Variant("err" if isinstance(value, _Err) else "ok", payload) if ty._tagged() else payload
    if value is _CLOSED and isinstance(ty, VariantType):
        return Variant("closed") if ty._tagged() else None
    return value


def _host_func(func: Callable[..., Any], result: Any, name: str) -> Callable[..., Any]:
    """Adapt ``func`` to wasmtime: resource arguments become their reps (which ends each borrow, as the
    component model requires before the call returns), results are lowered into ``result``, and any
    failure becomes a trap (a Python exception escaping a host function would go through wasmtime-py's
    process-global last-exception slot, which concurrent runs share)."""

    def call(store: Any, *args: Any) -> Any:
        try:
            plain = [_rep(store, arg) for arg in args]
            return _lower(result, func(store, *plain))
        except wasmtime.WasmtimeError:
            raise
        except Exception as exc:  # noqa: BLE001 - the host-function boundary (see above)
            raise wasmtime.WasmtimeError(f"codemode: {name} failed ({type(exc).__name__})") from None

    return call


def _rep(store: Any, value: Any) -> Any:
    if isinstance(value, ResourceAny):
        return value.to_host(store).rep
    if isinstance(value, list):
        return [_rep(store, v) for v in value]
    return value


def _drop_nothing(_store: object, _rep: int) -> None:
    return None


def _closed(_store: object, *_args: object) -> _Err:
    return _Err(_CLOSED)


def _ok(_store: object, *_args: object) -> _Ok:
    return _Ok()


def _denied(_store: object, *_args: object) -> _Err:
    return _Err("access-denied")


def _unavailable(interface: str, item: str) -> Callable[..., Any]:
    def trap(_store: object, *_args: object) -> None:
        raise wasmtime.WasmtimeError(f"codemode: {interface} {item} is not available in the sandbox")

    return trap
