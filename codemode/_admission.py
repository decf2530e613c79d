"""Admission of executions: a server-wide limit, a memory budget and a fair share per client.

Every ``execute`` (and every ``search`` with ``code``) takes a slot of an
:class:`ExecutionLimiter` for as long as its isolate runs:

* at most ``max_concurrent`` executions run at once, and the ``memory_mb`` of the running ones
  adds up to at most ``memory_budget_mb``;
* one client (an MCP session, or an authenticated subject across all its sessions) holds at
  most ``max_per_client`` slots, so that one client cannot take every slot;
* an execution that finds no slot waits in a queue for at most ``queue_seconds``, then fails
  with :class:`~codemode._errors.ServerBusy` (never a hang). When a slot frees, the waiting
  client that holds the fewest slots gets it (first come first served among equals).

One limiter may be shared by several servers in one process (the OAuth portal hosts one server
per API): pass the same object to each ``CodemodeServer(limiter=...)``. It works across event
loops and threads.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ._errors import ServerBusy

__all__ = ["ExecutionLimiter", "ExecutionLimits"]


class ExecutionLimits(BaseModel):
    """Limits of an :class:`ExecutionLimiter` (shared by every server that uses it)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    max_concurrent: int = Field(default=16, ge=1, le=1024, description="executions running at once")
    memory_budget_mb: int = Field(
        default=4096, ge=16, description="sum of the memory_mb of the executions running at once"
    )
    max_per_client: int | None = Field(
        default=None, ge=1, description="slots one client may hold at once (default: half of max_concurrent)"
    )
    queue_seconds: float = Field(
        default=1.0, ge=0, le=60, description="how long an execution waits for a slot before 'server busy'"
    )
    max_queued: int = Field(default=256, ge=0, description="executions waiting at once; more are refused at once")

    @model_validator(mode="after")
    def _share(self) -> ExecutionLimits:
        if self.max_per_client is not None and self.max_per_client > self.max_concurrent:
            raise ValueError("max_per_client cannot exceed max_concurrent")
        return self

    @property
    def per_client(self) -> int:
        return self.max_per_client or max(1, self.max_concurrent // 2)


@dataclass(eq=False)
class _Waiter:
    client: str
    memory_mb: int
    order: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    granted: bool = field(default=False)


class ExecutionLimiter:
    """Slots for running executions; see the module docstring. Thread-safe and loop-agnostic."""

    def __init__(self, limits: ExecutionLimits | None = None) -> None:
        self.limits = limits or ExecutionLimits()
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}
        self._running = 0
        self._memory = 0
        self._queue: list[_Waiter] = []
        self._order = itertools.count()

    def __repr__(self) -> str:
        return f"<ExecutionLimiter running={self._running} queued={len(self._queue)} limits={self.limits!r}>"

    @property
    def running(self) -> int:
        return self._running

    @property
    def queued(self) -> int:
        return len(self._queue)

    def held(self, client: str) -> int:
        return self._held.get(client, 0)

    @asynccontextmanager
    async def slot(self, client: str, memory_mb: int) -> AsyncIterator[None]:
        """Hold one slot for ``client`` while the block runs; :class:`ServerBusy` when none frees in time."""
        if memory_mb > self.limits.memory_budget_mb:
            raise ServerBusy(
                f"one execution needs memory_mb={memory_mb}, more than the server's whole "
                f"memory_budget_mb={self.limits.memory_budget_mb}; lower memory_mb or raise the budget.",
                code="server.memory_budget",
            )
        waiter: _Waiter | None = None
        with self._lock:
            if self._fits(client, memory_mb):
                self._take(client, memory_mb)
            elif len(self._queue) >= self.limits.max_queued:
                raise self._busy(client)
            else:
                loop = asyncio.get_running_loop()
                waiter = _Waiter(client, memory_mb, next(self._order), loop, loop.create_future())
                self._queue.append(waiter)
        if waiter is not None:
            await self._wait(waiter)
        try:
            yield
        finally:
            self._release(client, memory_mb)

    async def _wait(self, waiter: _Waiter) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), self.limits.queue_seconds)
        except (TimeoutError, asyncio.CancelledError) as exc:
            with self._lock:
                if not waiter.granted:
                    self._queue.remove(waiter)
                    if isinstance(exc, TimeoutError):
                        raise self._busy(waiter.client) from None
                    raise
            if isinstance(exc, asyncio.CancelledError):  # granted while being cancelled: give it back
                self._release(waiter.client, waiter.memory_mb)
                raise

    # -- bookkeeping (under self._lock) ------------------------------------------------
    def _fits(self, client: str, memory_mb: int) -> bool:
        return (
            self._running < self.limits.max_concurrent
            and self._memory + memory_mb <= self.limits.memory_budget_mb
            and self._held.get(client, 0) < self.limits.per_client
        )

    def _take(self, client: str, memory_mb: int) -> None:
        self._running += 1
        self._memory += memory_mb
        self._held[client] = self._held.get(client, 0) + 1

    def _release(self, client: str, memory_mb: int) -> None:
        with self._lock:
            self._running -= 1
            self._memory -= memory_mb
            left = self._held[client] - 1
            if left:
                self._held[client] = left
            else:
                del self._held[client]
            self._grant_waiting()

    def _grant_waiting(self) -> None:
        """Give free slots to waiting clients, the one holding fewest slots first."""
        while True:
            candidates = [w for w in self._queue if self._fits(w.client, w.memory_mb)]
            if not candidates:
                return
            chosen = min(candidates, key=lambda w: (self._held.get(w.client, 0), w.order))
            self._queue.remove(chosen)
            self._take(chosen.client, chosen.memory_mb)
            chosen.granted = True
            chosen.loop.call_soon_threadsafe(_resolve, chosen.future)

    def _busy(self, client: str) -> ServerBusy:
        mine = self._held.get(client, 0)
        return ServerBusy(
            f"server busy: {self._running} executions are running ({mine} of them yours, at most "
            f"{self.limits.per_client} per client) and none ended within queue_seconds={self.limits.queue_seconds:g}; "
            "try again in a few seconds, or do the work in fewer, shorter executions.",
            code="server.busy",
        )


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
