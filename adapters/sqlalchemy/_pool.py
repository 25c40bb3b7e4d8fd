"""Waiting for a pooled connection counts against the operation's time budget.

A pool that has handed out all its connections makes a checkout wait up to its own
``timeout`` (30 s by default), whatever the budget of the operation waiting. Inside
an attempt, the wait is bounded by the attempt's deadline instead (never longer than
the pool's own timeout); the user's own sessions wait as before.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy.pool import QueuePool

from adapters.sqlalchemy._listeners import connect_deadline

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

_MIN_WAIT = 0.001


class _BoundedWait:
    """Mixed into the pool's class: its ``_timeout`` is the attempt's remaining budget."""

    __slots__ = ()

    @property
    def _timeout(self) -> float:
        configured: float = self.__dict__["_configured_timeout"]
        deadline = connect_deadline.get()
        if deadline is None:
            return configured
        return max(min(configured, deadline - time.monotonic()), _MIN_WAIT)

    @_timeout.setter
    def _timeout(self, value: float) -> None:
        self.__dict__["_configured_timeout"] = value


_classes: dict[type, type] = {}
_lock = threading.Lock()


def bound_pool_waits(engine: Engine) -> None:
    """Make waits for ``engine``'s pooled connections inside attempts end with the budget."""
    pool: Any = engine.pool
    if not isinstance(pool, QueuePool) or isinstance(pool, _BoundedWait):
        return  # other pools never make a checkout wait
    with _lock:
        cls = type(pool)
        bounded = _classes.get(cls)
        if bounded is None:
            bounded = _classes[cls] = type(cls.__name__, (cls, _BoundedWait), {"__slots__": ()})
        configured = pool.__dict__.pop("_timeout")
        pool.__dict__["_configured_timeout"] = configured
        pool.__class__ = bounded
