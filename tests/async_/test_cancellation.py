"""Cancellation of async operations on MariaDB, with asyncmy and aiomysql.

A cancelled task, or an ``asyncio.timeout`` around an operation, is never retried: the
attempt is rolled back, the cancellation propagates, and a connection interrupted in the
middle of a protocol exchange is invalidated, never returned to the pool as it is. The
tests cancel at every suspension of an operation in turn (on a new connection, whose
connect has suspensions of its own, and on a pooled one), at increasing delays with
``asyncio.timeout``, and during a COMMIT the fault proxy holds. After each: the entry is
absent, or present exactly once (its COMMIT went through before the cancellation landed),
the counter agrees with the entries, no connection is checked out or left open on the
server, and the next operation works.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine as plain_async_engine
from sqlalchemy.pool import NullPool

from adapters.sqlalchemy import (
    AsyncSqlAlchemyUnitOfWork,
    create_async_engine,
    create_commit_marker_table,
)
from servers.mysql_proxy import Blackhole, BlackholeAfterCommit, FaultProxy
from tests.async_.support import (
    PoolWatch,
    create_schema,
    place,
    run_cancelled_at,
    server_connections,
    stored,
    unique_key,
    wait_for,
)
from uow import AsyncRunner, CommitOutcomeUnknown, ErrorKind, Reason, RetryPolicy, retry_details

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from sqlalchemy.ext.asyncio import AsyncEngine

    from servers.mariadb import MariaDBServer
    from tests.async_.support import CancelAt

pytestmark = [pytest.mark.integration, pytest.mark.async_runner, pytest.mark.anyio]

POLICY = RetryPolicy(timeout=20, wait_initial=0.01, wait_max=0.05)
MAX_SUSPENSIONS = 200
"""More suspensions than any operation here has: a loop that never ends is a failure."""


@dataclass
class Setup:
    """One engine and runner on the test's database, watched."""

    server: MariaDBServer
    database: str
    engine: AsyncEngine
    runner: AsyncRunner[AsyncSqlAlchemyUnitOfWork]
    watch: PoolWatch


async def make_setup(
    server: MariaDBServer,
    database: str,
    driver: str,
    variant: str,
    *,
    port: int | None = None,
    policy: RetryPolicy = POLICY,
) -> Setup:
    url = server.url(database, driver=f"mysql+{driver}", port=port)
    markers = variant == "markers"
    if markers:
        schema = sa.create_engine(make_url(url).set(drivername="mysql+pymysql"), poolclass=NullPool)
        try:
            create_commit_marker_table(schema)
        finally:
            schema.dispose()
    make = plain_async_engine if variant == "plain" else create_async_engine
    engine = make(url, pool_size=2, max_overflow=0)
    runner = AsyncSqlAlchemyUnitOfWork.factory(engine, policy=policy, commit_markers=markers)
    return Setup(server, database, engine, runner, PoolWatch(engine))


@pytest.fixture(params=["lean", "plain", "markers"])
async def setup(
    request: pytest.FixtureRequest, mariadb: MariaDBServer, database: str, driver: str
) -> AsyncIterator[Setup]:
    """The library's lean engine, SQLAlchemy's own (a ROLLBACK at check-in), commit markers."""
    create_schema(mariadb, database)
    made = await make_setup(mariadb, database, driver, request.param)
    try:
        yield made
    finally:
        await made.engine.dispose()


@pytest.fixture(autouse=True)
def _quiet_pool(caplog: pytest.LogCaptureFixture) -> None:
    """SQLAlchemy logs an ERROR when a cancellation cuts the ROLLBACK it sends at check-in."""
    caplog.set_level(logging.CRITICAL, logger="sqlalchemy.pool")


async def connection_id(setup: Setup) -> int:
    async def read(uow: AsyncSqlAlchemyUnitOfWork) -> int:
        return int((await uow.session.execute(text("SELECT CONNECTION_ID()"))).scalar_one())

    return await setup.runner.run(read)


def assert_consistent(setup: Setup, key: str, error: BaseException | None) -> int:
    """The entry is absent or there once (always once if the operation returned)."""
    now = stored(setup.server, setup.database)
    count = now.by_key.get(key, 0)
    assert count in {0, 1}, f"{key} stored {count} times"
    if error is None:
        assert count == 1
    assert all(n == 1 for n in now.by_key.values()), now.by_key
    assert now.counter == now.entries, "half an operation committed"
    return count


async def assert_pool_in_sync(setup: Setup) -> None:
    """Every pooled connection answers its own query: none is left inside an old exchange.

    All of them are checked out at once (so each is asked), and each asks for a number of
    its own: a connection still holding the reply to an interrupted query would read that.
    """
    pooled = setup.watch.checked_in
    if pooled == 0:
        return
    barrier = asyncio.Barrier(pooled)

    async def ask(number: int) -> None:
        async with setup.engine.connect() as connection:
            await barrier.wait()  # every pooled connection is out at the same time
            answer = (await connection.execute(text(f"SELECT {number}"))).scalar_one()
            assert answer == number

    async with asyncio.TaskGroup() as group:
        for number in range(pooled):
            group.create_task(ask(1000 + number))


async def assert_clean_afterwards(setup: Setup, driver: CancelAt | None, error: object) -> str:
    """No connection held, reused after invalidation or out of step; the next operation works.

    A connection the cancellation interrupted in the middle of an exchange is dropped at
    once: nothing more is sent on it (no ROLLBACK at check-in), it is never checked in as
    it is. Returns what became of it: ``"dropped"``, ``"completed"`` (the driver finished
    the exchange and lost the cancellation, which the runner then raised again) or ``""``.
    """
    watch = setup.watch
    assert watch.checked_out == 0, watch.log
    point = driver.cancelled_at if driver is not None else None
    fate = ""
    if driver is not None and point is not None and point.in_exchange and point.held:
        interrupted = point.held[-1]
        if driver.propagated(error if isinstance(error, BaseException) else None):
            # Invalidated, then its record checked in empty: no ROLLBACK, no reuse.
            after = watch.since(point.position, interrupted)
            assert after == ["invalidate"], (point.chain, watch.log)
            fate = "dropped"
        else:
            fate = "completed"
    await assert_pool_in_sync(setup)
    key = unique_key("next")
    assert await setup.runner.run(place, key) == key
    assert assert_consistent(setup, key, None) == 1
    assert not watch.reused_after_invalidation, watch.log
    wait_for(
        lambda: server_connections(setup.server, setup.database) == watch.checked_in,
        "the server to hold exactly the pool's connections",
    )
    return fate


@pytest.mark.parametrize("connection", ["new", "pooled"])
async def test_cancelled_at_every_suspension_of_an_operation(setup: Setup, connection: str) -> None:
    """Cancelled at each await point in turn: never retried, rolled back or once, clean pool."""
    interrupted_exchanges = invalidated = committed_then_cancelled = 0
    n = 0
    for n in range(1, MAX_SUSPENSIONS):
        if connection == "new":
            await setup.engine.dispose()  # the operation connects: its handshake is covered
        else:
            await connection_id(setup)  # a pooled connection, warmed up
        setup.watch.clear()
        key = unique_key(f"c{n}")
        run = functools.partial(setup.runner.run, place, key)
        driver, error = await run_cancelled_at(n, setup.watch, run)
        count = assert_consistent(setup, key, error)
        if error is None:  # finished before its n-th suspension: every point was covered
            assert driver.cancelled_at is None
            break
        assert isinstance(error, asyncio.CancelledError)
        assert retry_details(error) is None or not retry_details(error).will_retry  # type: ignore[union-attr]
        point = driver.cancelled_at
        assert point is not None
        assert point.number == n
        interrupted_exchanges += point.in_exchange
        committed_then_cancelled += count
        fate = await assert_clean_afterwards(setup, driver, error)
        invalidated += fate == "dropped"
        if fate == "completed" and "AsyncAttempt.__aexit__" not in point.chain:
            assert count == 0  # the body was cancelled, even if its driver lost that: no COMMIT
    else:
        pytest.fail(f"the operation still had suspensions after {MAX_SUSPENSIONS}")
    assert n >= 4
    assert interrupted_exchanges >= 3  # the read, the INSERT, the UPDATE, the COMMIT
    assert invalidated >= 3  # each connection interrupted mid-exchange was dropped
    print(  # noqa: T201 -- shown with -s
        f"{n - 1} suspensions, {interrupted_exchanges} inside an exchange, {invalidated} "
        f"connections dropped, {committed_then_cancelled} committed before the cancellation"
    )


async def test_asyncio_timeout_at_increasing_delays(setup: Setup) -> None:
    """``asyncio.timeout`` from 0 to 3 times an operation's duration: TimeoutError, clean."""
    durations = []
    for _ in range(7):
        started = time.perf_counter()
        await setup.runner.run(place, unique_key("timed"))
        durations.append(time.perf_counter() - started)
    duration = statistics.median(durations)
    outcomes = {"timed out": 0, "returned": 0}
    print(f"operation: {duration * 1e3:.2f} ms")  # noqa: T201 -- shown with -s
    steps = 24
    for step in range(steps + 1):
        delay = 3 * duration * step / steps
        setup.watch.clear()
        key = unique_key(f"t{step}")
        run = functools.partial(setup.runner.run, place, key)
        driver, error = await run_cancelled_at(None, setup.watch, run, cancel_after=delay)
        count = assert_consistent(setup, key, error)
        if error is None:
            outcomes["returned"] += 1
        else:
            assert isinstance(error, TimeoutError)
            assert retry_details(error) is None  # the caller's timeout, not the budget's
            assert driver.cancelled_at is not None
            outcomes["timed out"] += 1
        # A cancellation that reached the operation always comes out of it.
        assert driver.cancelled_at is None or error is not None
        fate = await assert_clean_afterwards(setup, driver, error)
        outcomes[fate or "elsewhere"] = outcomes.get(fate or "elsewhere", 0) + 1
        point = driver.cancelled_at
        if fate == "completed" and "AsyncAttempt.__aexit__" not in point.chain:  # type: ignore[union-attr]
            assert count == 0  # the body was cancelled, even if its driver lost that: no COMMIT
    assert outcomes["timed out"] >= 3, outcomes
    assert outcomes["returned"] >= 1, outcomes
    print(outcomes)  # noqa: T201


# --- a COMMIT held by the network --------------------------------------------------------


@dataclass
class Proxied:
    """A fault proxy in front of the test's database, and the setups made through it."""

    proxy: FaultProxy
    server: MariaDBServer
    database: str
    driver: str
    made: list[Setup]

    async def setup(self, variant: str, policy: RetryPolicy = POLICY) -> Setup:
        """A warmed-up setup through the proxy (the dialect's first connect, the first prune)."""
        made = await make_setup(
            self.server, self.database, self.driver, variant, port=self.proxy.port, policy=policy
        )
        self.made.append(made)
        await connection_id(made)
        return made


@pytest.fixture
async def proxied(mariadb: MariaDBServer, database: str, driver: str) -> AsyncIterator[Proxied]:
    """A fault proxy in front of the server; engines through it are disposed before it stops."""
    create_schema(mariadb, database)
    with FaultProxy(mariadb.host, mariadb.port) as proxy:
        bundle = Proxied(proxy, mariadb, database, driver, [])
        try:
            yield bundle
        finally:
            for made in bundle.made:
                await made.engine.dispose()


def hold_the_commit(setup: Setup, proxy: FaultProxy, *, applied: bool) -> None:
    """Hold the next COMMIT: before the server (never applied) or its reply (applied)."""
    if applied:
        proxy.arm(BlackholeAfterCommit())
        return
    pending = [Blackhole()]

    def before_commit(_connection: object) -> None:
        if pending:
            proxy.arm(pending.pop())

    event.listen(setup.engine.sync_engine, "commit", before_commit)


def wait_uptime(server: MariaDBServer, seconds: float) -> None:
    """The marker lookup KILLs the old connection only on a server up since well before."""
    [(_, uptime)] = server.admin("SHOW GLOBAL STATUS LIKE 'Uptime'")
    time.sleep(max(seconds - float(uptime), 0.0))


HOLD_TIMEOUT = 0.5
SLACK = 1.5
"""Seconds past the bound still counted as bounded, on a shared machine."""


@pytest.mark.parametrize("applied", [False, True], ids=["held-before-server", "reply-held"])
async def test_a_timeout_during_a_held_commit_propagates_and_drops_the_connection(
    proxied: Proxied, applied: bool
) -> None:
    """``asyncio.timeout`` fires during COMMIT: TimeoutError, once or absent, a new connection."""
    setup = await proxied.setup("lean")
    before = await connection_id(setup)
    hold_the_commit(setup, proxied.proxy, applied=applied)
    key = unique_key("held")
    started = time.monotonic()
    run = functools.partial(setup.runner.run, place, key)
    driver, error = await run_cancelled_at(None, setup.watch, run, cancel_after=HOLD_TIMEOUT)
    elapsed = time.monotonic() - started

    assert isinstance(error, TimeoutError)
    assert retry_details(error) is None
    assert HOLD_TIMEOUT <= elapsed < HOLD_TIMEOUT + SLACK
    assert proxied.proxy.wait_fired(0)
    point = driver.cancelled_at
    assert point is not None
    assert point.in_exchange
    assert "AsyncSessionTransaction.commit" in point.chain
    wait_for(
        lambda: stored(setup.server, setup.database).by_key.get(key, 0) == int(applied),
        "the server to settle the held transaction",
    )
    assert assert_consistent(setup, key, error) == int(applied)
    assert await assert_clean_afterwards(setup, driver, error) == "dropped"
    assert await connection_id(setup) != before  # the held one was dropped


@pytest.mark.parametrize("applied", [False, True], ids=["held-before-server", "reply-held"])
@pytest.mark.parametrize("variant", ["markers", "lean"], ids=["markers", "no-markers"])
async def test_the_time_budget_running_out_during_a_held_commit_is_a_lost_commit(
    proxied: Proxied, applied: bool, variant: str
) -> None:
    """The budget's own timeout at COMMIT: settled by the marker, else CommitOutcomeUnknown."""
    wait_uptime(proxied.server, 4.0)
    budget = 1.0
    setup = await proxied.setup(variant, POLICY.override(timeout=budget))
    hold_the_commit(setup, proxied.proxy, applied=applied)
    key = unique_key("budget")
    started = time.monotonic()
    try:
        result: str | None = await setup.runner.run(place, key)
        error: BaseException | None = None
    except (TimeoutError, CommitOutcomeUnknown) as raised:
        result, error = None, raised
    elapsed = time.monotonic() - started

    assert elapsed < budget + 1.0 + SLACK  # the budget, the resolution's grace, the machine
    assert proxied.proxy.wait_fired(0)
    if variant == "markers" and applied:
        assert result == key  # the marker says it committed: attempt 1's result
    elif variant == "markers":
        assert isinstance(error, TimeoutError)  # absent, and no budget left to rerun it
        details = retry_details(error)
        assert details is not None
        assert (details.kind, details.reason) == (
            ErrorKind.INTERRUPTED,
            Reason.TIME_BUDGET_EXHAUSTED,
        )
    else:
        assert isinstance(error, CommitOutcomeUnknown)
        assert isinstance(error.__cause__, TimeoutError)
    wait_for(
        lambda: stored(setup.server, setup.database).by_key.get(key, 0) == int(applied),
        "the server to settle the held transaction",
    )
    assert_consistent(setup, key, error)
    await assert_clean_afterwards(setup, None, error)
