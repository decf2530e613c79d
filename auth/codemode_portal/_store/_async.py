"""Calling the (synchronous) store from the event loop: every call hops to a worker thread, so a
slow database (PostgreSQL over the network, a locked SQLite file) never blocks the loop."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import anyio
from anyio import CapacityLimiter

from ._types import Store

__all__ = ["AsyncStore"]

T = TypeVar("T")
DEFAULT_THREADS = 16  # concurrent store calls in flight (the pool of the engine is sized near this)


class AsyncStore:
    """``await astore.call(Store.method, *args)`` or ``await astore.run(fn)`` (fn gets the store)."""

    def __init__(self, store: Store, *, threads: int = DEFAULT_THREADS) -> None:
        self.store = store
        self._limiter = CapacityLimiter(threads)

    async def run(self, fn: Callable[[Store], T]) -> T:
        return await anyio.to_thread.run_sync(fn, self.store, limiter=self._limiter)

    async def call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``method`` is an unbound ``Store`` method name's function, e.g. ``store.find_token``."""
        return await anyio.to_thread.run_sync(partial(method, *args, **kwargs), limiter=self._limiter)
