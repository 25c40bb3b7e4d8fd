"""The async runner on the Galera cluster, through HAProxy, while the writer node is killed.

Tasks of one event loop run ``async def`` operations (asyncmy, commit markers on) through
HAProxy; a few seconds in, the node HAProxy routes to is killed (``kill -9``) and HAProxy
fails over. Connections are lost mid-transaction and at COMMIT, the survivors stall
commits for a while (the cluster evicts the dead node), and lost COMMITs are looked up
on another node. Afterwards, every operation that returned is in the database exactly
once, on every node, and the counter agrees; the workload and its audit are the sync
chaos run's (``tests/galera/workload.py``).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest

from adapters.sqlalchemy import (
    MARKER_TABLE,
    AsyncSqlAlchemyUnitOfWork,
    create_async_engine,
    create_commit_marker_table,
)
from tests.galera.test_chaos import CAUSAL_READS, POLICY
from tests.galera.workload import (
    BUMP_COUNTER,
    INSERT_ENTRY,
    Outcome,
    ResolutionCounter,
    RetryCounter,
    audit,
    create_schema,
    outcome_of,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Engine

    from servers.galera import GaleraCluster
    from uow import AsyncRunner

pytestmark = [
    pytest.mark.galera,
    pytest.mark.async_runner,
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]

TASKS = 20
MIN_OPERATIONS = 300
BEFORE = 2.0
"""Seconds of writing before the kill."""
AFTER = 8.0
"""Seconds of writing once HAProxy routes to a survivor (the commit stall that follows a
node's death, until the cluster evicts it, takes about 6 s)."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def place_entry(uow: Any, key: str, worker: str) -> str:
    """The Galera workload's operation, awaited."""
    session = uow.session
    values = {"key": key, "worker": worker, "attempt": uow.attempt.number}
    await session.execute(INSERT_ENTRY, values)
    await session.execute(BUMP_COUNTER)
    return key


async def call(runner: AsyncRunner[Any], key: str, worker: str) -> Outcome:
    started = time.monotonic()
    try:
        await runner.run(place_entry, key, worker)
    except Exception as error:  # every failure is audited
        return outcome_of(key, worker, started, error, ())
    return outcome_of(key, worker, started, None, ())


async def test_async_operations_through_haproxy_survive_the_writer_node_killed(
    cluster: GaleraCluster, database: str, make_engine: Callable[..., Engine]
) -> None:
    """Operations that returned are stored exactly once on every node; counter and markers agree."""
    create_schema(cluster, database)
    create_commit_marker_table(make_engine(cluster.url(database)))
    engine = create_async_engine(
        cluster.url(database, driver="mysql+asyncmy"),
        pool_size=TASKS,
        connect_args={"init_command": CAUSAL_READS},
    )
    retries = RetryCounter()
    runner = AsyncSqlAlchemyUnitOfWork.factory(
        engine, policy=POLICY, hooks=[retries], commit_markers=True
    )
    outcomes: list[Outcome] = []
    stop = asyncio.Event()

    async def work(worker: str) -> None:
        number = 0
        while not (stop.is_set() and len(outcomes) >= MIN_OPERATIONS):
            number += 1
            outcomes.append(await call(runner, f"{worker}-{number:06d}", worker))

    try:
        warmup = await call(runner, "warmup", "warmup")
        assert warmup.returned, warmup
        with ResolutionCounter() as resolutions:
            async with asyncio.TaskGroup() as group:
                for index in range(TASKS):
                    group.create_task(work(f"t{index}"))
                await asyncio.sleep(BEFORE)
                victim = cluster.which_node_haproxy_routes_to()
                assert victim is not None
                killed = time.monotonic()
                await asyncio.to_thread(victim.kill)
                survivor = await asyncio.to_thread(
                    cluster.wait_haproxy_routes_to,
                    [node for node in cluster.nodes if node is not victim],
                    30,
                )
                failed_over = time.monotonic() - killed
                await asyncio.sleep(AFTER)
                stop.set()
    finally:
        await engine.dispose()

    result = audit(cluster, database, outcomes, extra_committed=1, markers_table=MARKER_TABLE)
    premature = [o for o in result.failed if o.reason != "time budget exhausted"]
    print(  # noqa: T201 -- the figures, shown with -s
        f"\n--- async Galera run: {result.operations} operations from {TASKS} tasks; "
        f"kill -9 {victim.name}, HAProxy on {survivor.name} after {failed_over:.1f} s\n"
        f"  returned {result.returned}, failed {len(result.failed)} (with budget left: "
        f"{len(premature)}); committed by node {result.by_node}\n"
        f"  retries {retries.total}: {dict(retries.by_kind.most_common())}; "
        f"lost COMMITs resolved: {dict(resolutions.outcomes)}\n"
        f"  lost {len(result.lost)}, duplicated {len(result.duplicated)}, phantom "
        f"{len(result.phantom)}; counter by node {result.counter_by_node} (expected "
        f"{result.expected_counter}); markers {result.markers}"
    )
    assert result.operations >= MIN_OPERATIONS
    assert result.lost == []
    assert result.duplicated == {}
    assert result.phantom == []
    assert premature == [], premature[:5]
    assert result.counters_consistent, (result.counter_by_node, result.expected_counter)
    assert result.markers == result.expected_counter
    assert sum(retries.by_kind.values()) > 0  # the kill did reach operations in flight
