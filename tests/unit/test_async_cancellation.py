"""Cancelling async operations, on the in-memory adapter: never retried, never committed.

The same rules on MariaDB, with real drivers and connections: ``tests/async_``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
from sqlalchemy.util import greenlet_spawn

from adapters.memory import AsyncInMemoryBackend, AsyncInMemoryRepository, AsyncInMemoryUnitOfWork
from adapters.sqlalchemy._listeners import pause
from tests.unit.conftest import Task
from uow import AsyncRunner, Reason, RetryPolicy, repository, retry_details
from uow.testing import Fault, inject

pytestmark = pytest.mark.anyio


class Tasks(AsyncInMemoryRepository[Task]):
    pass


class Unit(AsyncInMemoryUnitOfWork):
    tasks = repository(Tasks)


class SlowRollback(AsyncInMemoryBackend):
    """A store whose rollback takes 0.3 s (a server that answers slowly)."""

    rollbacks = 0

    def begin(self, attempt: Any) -> Any:
        transaction: Any = super().begin(attempt)
        rollback = transaction.rollback

        async def slow() -> None:
            self.rollbacks += 1
            await asyncio.sleep(0.3)
            await rollback()

        transaction.rollback = slow
        return transaction


def store_of(runner: AsyncRunner[Any]) -> AsyncInMemoryBackend:
    backend = runner.backend
    assert isinstance(backend, AsyncInMemoryBackend)
    return backend


async def test_a_timeout_around_an_operation_is_not_retried_and_commits_nothing() -> None:
    """``asyncio.timeout`` fires in the operation: TimeoutError, one attempt, nothing written."""
    units = Unit.factory(policy=RetryPolicy(timeout=5))

    async def slow(uow: Unit) -> None:
        uow.tasks.add(Task("never"))
        await asyncio.sleep(1)

    with pytest.raises(TimeoutError) as caught:
        async with asyncio.timeout(0.05):
            await units.run(slow)
    assert retry_details(caught.value) is None  # the caller's timeout, not the budget's
    store = store_of(units)
    assert (store.attempts, store.commits) == (1, 0)


async def test_a_cancellation_the_operation_swallowed_still_cancels_the_attempt() -> None:
    """A CancelledError caught in the body (as a driver may lose one): rolled back, raised."""
    units = Unit.factory(policy=RetryPolicy(timeout=5))
    entered = asyncio.Event()

    async def swallows(uow: Unit) -> str:
        uow.tasks.add(Task("cancelled"))
        entered.set()
        # What asyncio.wait_for does on Python 3.11 when its inner future has just completed.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(1)
        return "finished"

    task = asyncio.ensure_future(units.run(swallows))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    store = store_of(units)
    assert (store.attempts, store.commits) == (1, 0)


async def test_an_outside_cancellation_during_the_budgets_cleanup_propagates() -> None:
    """Cancelled while the time budget's own timeout is being cleaned up: CancelledError."""
    store = SlowRollback()
    runner = AsyncRunner(store, policy=RetryPolicy(timeout=0.1))

    async def waits(_uow: object) -> None:
        await asyncio.sleep(5)

    task = asyncio.ensure_future(runner.run(waits))
    await asyncio.sleep(0.2)  # the budget ran out at 0.1 s; the rollback runs until 0.4 s
    assert store.rollbacks == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelling() == 1  # the cancellation was delivered, never taken back


async def test_the_budget_alone_still_ends_in_time_budget_exhausted() -> None:
    """Without an outside cancellation, the same slow cleanup ends as the budget's timeout."""
    runner = AsyncRunner(SlowRollback(), policy=RetryPolicy(timeout=0.1))

    async def waits(_uow: object) -> None:
        await asyncio.sleep(5)

    with pytest.raises(TimeoutError) as caught:
        await runner.run(waits)
    details = retry_details(caught.value)
    assert details is not None
    assert details.reason is Reason.TIME_BUDGET_EXHAUSTED


async def test_the_librarys_pause_is_awaited_inside_an_async_sessions_greenlet() -> None:
    """``pause()`` (between two tries of a marker lookup) lets the loop run in the bridge."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.ensure_future(ticker())
    started = time.monotonic()
    await greenlet_spawn(pause, 0.2)  # how the async adapter runs the sync adapter's code
    elapsed = time.monotonic() - started
    ticking.cancel()
    assert elapsed >= 0.2
    assert ticks >= 10  # a time.sleep here would have stopped the ticker


def test_the_librarys_pause_sleeps_in_sync_code() -> None:
    """Outside SQLAlchemy's greenlet bridge, ``pause()`` is a plain sleep."""
    started = time.monotonic()
    pause(0.05)
    assert time.monotonic() - started >= 0.05


class SlowMarkers(AsyncInMemoryBackend):
    """A store whose commit marker takes 0.2 s to look up (a lock the old transaction holds)."""

    def begin(self, attempt: Any) -> Any:
        transaction: Any = super().begin(attempt)
        committed = transaction.committed

        async def slow(timeout: float) -> bool | None:  # noqa: ASYNC109 -- the protocol's
            await asyncio.sleep(0.2)
            found: bool | None = await committed(timeout)
            return found

        transaction.committed = slow
        return transaction


async def test_a_lost_commit_near_the_end_of_the_budget_is_still_settled() -> None:
    """COMMIT lost 0.05 s before the deadline, its marker found 0.2 s later: the result."""
    runner = AsyncRunner(
        SlowMarkers({"tasks": Tasks}, unit_class=Unit, commit_markers=True),
        policy=RetryPolicy(timeout=0.3),
    )

    async def late_write(uow: Unit) -> str:
        uow.tasks.add(Task("late"))
        await asyncio.sleep(0.25)
        return "written"

    with inject(Fault.lost_commit(committed=True)):
        # The sync runner gives the lookup a grace of 1 s past the deadline (RESOLUTION_GRACE).
        assert await runner.run(late_write) == "written"
