"""What the async tests share: a coroutine driver that cancels at its N-th suspension, a
watch on the pool, and the small schema their operations write.

The driver records, at every suspension, whether the task is inside SQLAlchemy's greenlet
bridge (``greenlet_spawn``): every byte the driver sends or reads goes through it, so a
cancellation there interrupts a protocol exchange (or a connect), and the connection it
was on must never be used again.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, text

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Generator

    from sqlalchemy.ext.asyncio import AsyncEngine

    from servers.mariadb import MariaDBServer

DRIVERS = ("asyncmy", "aiomysql")
SCHEMA = (
    (
        "CREATE TABLE {db}.entries (id BIGINT AUTO_INCREMENT PRIMARY KEY,"
        " op_key VARCHAR(40) NOT NULL, KEY ix_entries_op_key (op_key)) ENGINE=InnoDB"
    ),
    "CREATE TABLE {db}.counter (id INT PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB",
    "INSERT INTO {db}.counter VALUES (1, 0)",
)
SETTLE = 5.0
"""Seconds the server may take to notice that a client closed its connection."""


def create_schema(server: MariaDBServer, database: str) -> None:
    """The entries (a non-unique key: a duplicate shows) and the counter, as admin."""
    for statement in SCHEMA:
        server.admin(statement.replace("{db}", f"`{database}`"))


async def place(uow: Any, key: str) -> str:
    """The operation: a read, the entry, an await point of its own, the counter."""
    session = uow.session
    await session.execute(text("SELECT COUNT(*) FROM entries"))
    await session.execute(text("INSERT INTO entries (op_key) VALUES (:key)"), {"key": key})
    await asyncio.sleep(0)
    await session.execute(text("UPDATE counter SET n = n + 1 WHERE id = 1"))
    return key


@dataclass(frozen=True)
class Stored:
    """What the database holds, read as admin."""

    by_key: dict[str, int]
    counter: int

    @property
    def entries(self) -> int:
        return sum(self.by_key.values())


def stored(server: MariaDBServer, database: str) -> Stored:
    db = f"`{database}`"
    rows = server.admin(f"SELECT op_key, COUNT(*) FROM {db}.entries GROUP BY op_key")
    [(counter,)] = server.admin(f"SELECT n FROM {db}.counter WHERE id = 1")
    return Stored({str(key): int(n) for key, n in rows}, int(counter))


def server_connections(server: MariaDBServer, database: str) -> int:
    """Connections the server has open for the app user on ``database``."""
    [(count,)] = server.admin(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s AND DB = %s",
        [server.user, database],
    )
    return int(count)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = SETTLE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {timeout} s for {what}")
        time.sleep(0.02)


def unique_key(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def await_chain(coro: Any) -> list[str]:
    """The qualified names of the coroutines a coroutine is suspended in, outermost first."""
    names: list[str] = []
    current = coro
    while current is not None:
        names.append(getattr(current, "__qualname__", type(current).__name__))
        following = getattr(current, "cr_await", None)
        current = following if following is not None else getattr(current, "gi_yieldfrom", None)
    return names


@dataclass
class Suspension:
    """Where a coroutine was suspended when its task was cancelled."""

    number: int
    chain: list[str]
    held: list[object]
    """The DBAPI connections checked out at that moment, oldest first."""
    position: int
    """How many pool events had happened by then."""

    @property
    def in_exchange(self) -> bool:
        """Inside SQLAlchemy's greenlet bridge: talking to the server (or connecting)."""
        return "greenlet_spawn" in self.chain


class CancelAt:
    """Await a coroutine, cancelling its task at the coroutine's ``n``-th suspension.

    A suspension is a point where the coroutine gives control back to the event loop
    (an ``await`` that does not complete at once): the cancellation is delivered there,
    exactly as a ``task.cancel()`` from elsewhere would be at that moment. With ``n``
    ``None`` it cancels nothing itself and only notes where a cancellation from elsewhere
    (an ``asyncio.timeout``) landed.
    """

    def __init__(self, coro: Coroutine[Any, Any, Any], n: int | None, watch: PoolWatch) -> None:
        self.coro = coro
        self.n = n
        self.watch = watch
        self.suspensions = 0
        self.cancelled_at: Suspension | None = None
        self.thrown: asyncio.CancelledError | None = None
        """The cancellation delivered to the coroutine (the first one)."""

    def __await__(self) -> Generator[Any, Any, Any]:
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            try:
                yielded = self.coro.send(sent) if thrown is None else self.coro.throw(thrown)
            except StopIteration as done:
                return done.value
            self.suspensions += 1
            if self.suspensions == self.n:
                task = asyncio.current_task()
                assert task is not None
                task.cancel()
            try:
                sent, thrown = (yield yielded), None
            except BaseException as error:  # handed to the coroutine, as the task would
                if isinstance(error, asyncio.CancelledError) and self.thrown is None:
                    # Still suspended where the cancellation reached it.
                    chain = await_chain(self.coro)
                    held, position = list(self.watch.held), len(self.watch.events)
                    self.cancelled_at = Suspension(self.suspensions, chain, held, position)
                    self.thrown = error
                sent, thrown = None, error

    def propagated(self, error: BaseException | None) -> bool:
        """Whether ``error`` is the delivered cancellation itself (or a timeout made of it).

        Anything else means the cancellation was lost on the way out (and, if the runner
        noticed, raised again as a new ``CancelledError``).
        """
        if self.thrown is None or error is None:
            return False
        return error is self.thrown or error.__cause__ is self.thrown


@dataclass
class PoolWatch:
    """Pool events of an AsyncEngine, in order: checkouts, resets, invalidations, check-ins.

    The DBAPI connections are kept (alive) in the events, so that no object id is reused.
    """

    engine: AsyncEngine
    held: list[object] = field(default_factory=list)
    """The DBAPI connections checked out now, oldest first."""
    events: list[tuple[str, object]] = field(default_factory=list)
    invalidated: list[object] = field(default_factory=list)
    reused_after_invalidation: list[object] = field(default_factory=list)

    def __post_init__(self) -> None:
        sync = self.engine.sync_engine
        event.listen(sync, "checkout", self._checkout)
        event.listen(sync, "checkin", self._checkin)
        event.listen(sync, "invalidate", self._invalidate)
        event.listen(sync, "reset", self._reset)

    def _checkout(self, dbapi_connection: object, _record: object, _proxy: object) -> None:
        self.events.append(("checkout", dbapi_connection))
        if any(dbapi_connection is gone for gone in self.invalidated):
            self.reused_after_invalidation.append(dbapi_connection)
        self.held.append(dbapi_connection)

    def _checkin(self, dbapi_connection: object | None, _record: object) -> None:
        # An invalidated record checks in without its connection (dropped at invalidation).
        self.events.append(("checkin", dbapi_connection))
        if dbapi_connection is not None:
            self._release(dbapi_connection)

    def _invalidate(self, dbapi_connection: object, _record: object, _error: object) -> None:
        self.events.append(("invalidate", dbapi_connection))
        self.invalidated.append(dbapi_connection)
        self._release(dbapi_connection)

    def _reset(self, dbapi_connection: object, _record: object, _state: object) -> None:
        self.events.append(("reset", dbapi_connection))

    def _release(self, dbapi_connection: object) -> None:
        self.held = [held for held in self.held if held is not dbapi_connection]

    def since(self, position: int, connection: object) -> list[str]:
        """What happened to ``connection`` after event number ``position``."""
        return [name for name, about in self.events[position:] if about is connection]

    @property
    def log(self) -> list[str]:
        return [f"{name}{'' if about is not None else ' (empty)'}" for name, about in self.events]

    def clear(self) -> None:
        self.events.clear()

    @property
    def checked_out(self) -> int:
        return int(self.engine.sync_engine.pool.checkedout())  # type: ignore[attr-defined]

    @property
    def checked_in(self) -> int:
        return int(self.engine.sync_engine.pool.checkedin())  # type: ignore[attr-defined]


async def run_cancelled_at(
    n: int | None,
    watch: PoolWatch,
    operation: Callable[[], Awaitable[Any]],
    *,
    cancel_after: float | None = None,
) -> tuple[CancelAt, BaseException | None]:
    """Run ``operation()``, cancelled at its ``n``-th suspension or by ``asyncio.timeout``.

    Returns the driver and what came out: the ``CancelledError`` (its request withdrawn
    again, as ``asyncio.timeout`` does with its own) or ``TimeoutError``, or ``None``.
    """
    driver = CancelAt(_as_coroutine(operation), n, watch)
    try:
        if cancel_after is None:
            await driver
        else:
            async with asyncio.timeout(cancel_after):
                await driver
    except asyncio.CancelledError as cancelled:
        task = asyncio.current_task()
        assert task is not None
        task.uncancel()
        return driver, cancelled
    except TimeoutError as timed_out:
        return driver, timed_out
    return driver, None


async def _as_coroutine(operation: Callable[[], Awaitable[Any]]) -> Any:
    return await operation()
