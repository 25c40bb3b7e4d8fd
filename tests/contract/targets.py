"""The targets the contract runs on, each behind one interface: `Target.units()`.

A target is an adapter on a database of the test's own: the in-memory store, SQLAlchemy
on a SQLite file, SQLAlchemy on MariaDB, and the async twins (in memory, and asyncmy on
MariaDB). Its runner runs operations typed against `Shop`, whatever the adapter.
"""

from __future__ import annotations

import contextvars
import functools
from typing import TYPE_CHECKING, Concatenate, ParamSpec, Protocol, TypeVar

from sqlalchemy.util import greenlet_spawn

from adapters.sqlalchemy import create_commit_marker_table
from tests.contract.shops import (
    AsyncMemoryShop,
    AsyncSqlShop,
    Bridge,
    MemoryShop,
    SqlShop,
    SyncShop,
)

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

    from tests.contract.model import Shop
    from tests.contract.shops import AsyncShop
    from uow import AsyncRunner, EventHandlers, Runner

P = ParamSpec("P")
R = TypeVar("R")


class Units(Protocol):
    """Runs operations on `Shop`: a sync runner, or an async one behind the bridge."""

    def run(
        self, fn: Callable[Concatenate[Shop, P], R], /, *args: P.args, **kwargs: P.kwargs
    ) -> R: ...


class Target(Protocol):
    name: str

    def units(
        self, *, commit_markers: bool = False, event_handlers: EventHandlers | None = None
    ) -> Units:
        """Return a runner on the target's database (on the in-memory store: a new one)."""


class MemoryTarget:
    name = "memory"

    def units(
        self, *, commit_markers: bool = False, event_handlers: EventHandlers | None = None
    ) -> Units:
        runner: Runner[Shop] = MemoryShop.factory(
            commit_markers=commit_markers, event_handlers=event_handlers or {}
        )
        return runner


class SqlTarget:
    def __init__(self, name: str, engine: Engine) -> None:
        self.name = name
        self.engine = engine

    def units(
        self, *, commit_markers: bool = False, event_handlers: EventHandlers | None = None
    ) -> Units:
        if commit_markers:
            create_commit_marker_table(self.engine)
        runner: Runner[Shop] = SqlShop.factory(
            self.engine, commit_markers=commit_markers, event_handlers=event_handlers or {}
        )
        return runner


class AsyncTarget:
    """An async unit of work, run by an ``AsyncRunner`` on the test's event loop."""

    def __init__(
        self,
        name: str,
        loop: asyncio.Runner,
        engine: AsyncEngine | None = None,
        marker_engine: Engine | None = None,
    ) -> None:
        """Use ``engine`` (in memory without one); ``marker_engine`` creates the markers' table."""
        self.name = name
        self.bridge = Bridge(loop)
        self.engine = engine
        self.marker_engine = marker_engine

    def units(
        self, *, commit_markers: bool = False, event_handlers: EventHandlers | None = None
    ) -> Units:
        handlers = event_handlers or {}
        runner: AsyncRunner[AsyncShop]
        if self.engine is None:
            runner = AsyncMemoryShop.factory(commit_markers=commit_markers, event_handlers=handlers)
        else:
            if commit_markers and self.marker_engine is not None:
                create_commit_marker_table(self.marker_engine)
            runner = AsyncSqlShop.factory(
                self.engine, commit_markers=commit_markers, event_handlers=handlers
            )
        return BridgedUnits(runner, self.bridge)


class BridgedUnits:
    """An ``AsyncRunner`` running sync operations: each is spawned in a greenlet of its attempt."""

    def __init__(self, runner: AsyncRunner[AsyncShop], bridge: Bridge) -> None:
        self._runner = runner
        self._bridge = bridge

    def run(
        self, fn: Callable[Concatenate[Shop, P], R], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        bridge = self._bridge

        async def operation(uow: AsyncShop) -> R:
            call = functools.partial(fn, SyncShop(uow, bridge), *args, **kwargs)
            result: R = await greenlet_spawn(call)
            return result

        operation.__qualname__ = fn.__qualname__  # the operation's name in logs and details
        operation.__name__ = getattr(fn, "__name__", "operation")
        # Run in a copy of this context: faults injected by the test reach the attempts.
        return bridge.loop.run(self._runner.run(operation), context=contextvars.copy_context())
