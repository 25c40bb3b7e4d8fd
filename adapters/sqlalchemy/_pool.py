"""Waiting for a pooled connection is load, not failure: bounded by the budget, in turn.

A pool that has handed out all its connections makes a checkout wait up to its own
``timeout`` (30 s by default), whatever the budget of the operation waiting, and the
wait is not fair: a thread returning a connection can take it back before the thread
woken for it does, so under sustained load some operations wait until they time out
while others barge ahead. Inside an attempt, the adapter changes two things on the
user's pool (sync ``QueuePool`` and its subclasses):

- attempts queue at a gate that admits as many of them as the pool has connections
  (size plus overflow), in the order they asked, and hands a returned connection's place
  straight to the oldest waiter;
- every wait (at the gate, and in the pool behind it) ends with the attempt's time
  budget, never later than the pool's own timeout.

The user's own sessions check out as before. An asyncio pool keeps its own queue (a
thread-blocking gate would stall the event loop) and gets the budget bound only.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from sqlalchemy import exc
from sqlalchemy.pool import AsyncAdaptedQueuePool, QueuePool

from adapters.sqlalchemy._listeners import connect_deadline

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import ConnectionPoolEntry

_MIN_WAIT = 0.001


class Gate:
    """Admits up to ``capacity`` holders, the waiting ones in the order they came."""

    def __init__(self, capacity: int) -> None:
        """Start with ``capacity`` free places."""
        self.capacity = capacity
        self._free = capacity
        self._waiters: deque[threading.Event] = deque()
        self._lock = threading.Lock()

    def acquire(self, timeout: float) -> bool:
        """Take a place, waiting at most ``timeout`` seconds behind earlier waiters."""
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return True
            turn = threading.Event()
            self._waiters.append(turn)
        if turn.wait(timeout):
            return True
        with self._lock:
            if turn.is_set():  # handed over just as the wait ended
                return True
            self._waiters.remove(turn)
            return False

    def release(self) -> None:
        """Give a place back: to the oldest waiter if there is one."""
        with self._lock:
            if self._waiters:
                self._waiters.popleft().set()
            else:
                self._free += 1

    @property
    def waiting(self) -> int:
        """Attempts waiting for a place now."""
        return len(self._waiters)


def _bounded_class(base: type[QueuePool]) -> type[QueuePool]:
    """Return the subclass of a pool class whose waits inside attempts are fair and bounded."""

    def get_timeout(pool: QueuePool) -> float:
        configured: float = pool.__dict__["_configured_timeout"]
        deadline = connect_deadline.get()
        if deadline is None:
            return configured
        return max(min(configured, deadline - time.monotonic()), _MIN_WAIT)

    def set_timeout(pool: QueuePool, value: float) -> None:
        pool.__dict__["_configured_timeout"] = value

    def do_get(pool: QueuePool) -> ConnectionPoolEntry:
        gate: Gate | None = pool.__dict__.get("_uow_gate")
        deadline = connect_deadline.get()
        if gate is None or deadline is None:
            return base._do_get(pool)  # noqa: SLF001 -- the pool's own checkout
        if not gate.acquire(max(deadline - time.monotonic(), _MIN_WAIT)):
            msg = (
                "no pooled connection became free for this attempt within the operation's "
                f"time budget ({gate.capacity} in use by attempts, {gate.waiting} waiting)"
            )
            raise exc.TimeoutError(msg)
        try:
            record = base._do_get(pool)  # noqa: SLF001
        except BaseException:
            gate.release()
            raise
        pool.__dict__["_uow_gated"].add(record)
        return record

    def do_return_conn(pool: QueuePool, record: ConnectionPoolEntry) -> None:
        try:
            base._do_return_conn(pool, record)  # noqa: SLF001
        finally:
            gated: set[object] = pool.__dict__.get("_uow_gated", set())
            if record in gated:
                gated.discard(record)
                pool.__dict__["_uow_gate"].release()

    namespace = {
        "__slots__": (),
        "__module__": base.__module__,
        "_timeout": property(get_timeout, set_timeout),
        "_do_get": do_get,
        "_do_return_conn": do_return_conn,
        "_uow_bounded": True,
    }
    return type(base.__name__, (base,), namespace)


_classes: dict[type, type] = {}
_lock = threading.Lock()


def bound_pool_waits(engine: Engine) -> None:
    """Make waits for ``engine``'s pooled connections inside attempts fair and budget-bound."""
    pool: Any = engine.pool
    if not isinstance(pool, QueuePool) or getattr(pool, "_uow_bounded", False):
        return  # other pools never make a checkout wait
    with _lock:
        cls = type(pool)
        bounded = _classes.get(cls)
        if bounded is None:
            bounded = _classes[cls] = _bounded_class(cls)
        configured = pool.__dict__.pop("_timeout")
        pool.__dict__["_configured_timeout"] = configured
        overflow = pool._max_overflow  # noqa: SLF001 -- no public accessor
        if overflow >= 0 and not isinstance(pool, AsyncAdaptedQueuePool):
            pool.__dict__["_uow_gate"] = Gate(pool.size() + overflow)
            pool.__dict__["_uow_gated"] = set()
        pool.__class__ = bounded
