"""A short outage under many concurrent operations, with the default retry budget.

100 async operations in a closed loop, the server killed and restarted after 3 s. Each
operation retries a lost or refused connection after 0.02 s, 0.1 s, ... (full jitter), so
the outage costs about five retries per operation: some 500 retries, where the default
budget's reserve pays 300 (10 per second over its 30 s window) plus 0.2 per first
attempt. Once it is spent, every operation waits for the budget to pay its next retry, and
no first attempt deposits while all the closed-loop workers wait. The budget's floor still
pays 10 retries a second; the first that succeeds after the restart is refunded and pays
for the next, so the operations drain soon after the server answers again.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import uuid
import warnings
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from adapters.sqlalchemy import AsyncSqlAlchemyUnitOfWork, create_async_engine
from tests.async_.support import create_schema, place
from uow import CommitOutcomeUnknown, RetryPolicy, retry_details

if TYPE_CHECKING:
    from servers.mariadb import MariaDBServer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.async_runner,
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore::ResourceWarning"),  # the readiness poll's sockets
]

OPERATIONS = 100
DOWN = 3.0
BUDGET = 12.0
"""Seconds of each operation's time budget: well past the outage, well short of 30 s."""
RECOVERY = 5.0
"""Seconds after the restart by which every operation caught by the outage has ended."""


@pytest.fixture(autouse=True)
def _quiet_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="retrying_uow")
    caplog.set_level(logging.CRITICAL, logger="sqlalchemy.pool")


async def test_operations_caught_by_a_short_outage_finish_soon_after_it(
    private_mariadb: MariaDBServer,
) -> None:
    """After a 3 s outage, 100 operations with the default retry budget all finish within 5 s."""
    server = private_mariadb
    database = server.create_database(f"budget_{uuid.uuid4().hex[:8]}")
    create_schema(server, database)
    engine = create_async_engine(server.url(database, driver="mysql+asyncmy"), pool_size=20)
    runner = AsyncSqlAlchemyUnitOfWork.factory(engine, policy=RetryPolicy(timeout=BUDGET))
    stop = asyncio.Event()
    outcomes: Counter[str] = Counter()
    finished_at: list[float] = []

    async def work(worker: int) -> None:
        number = 0
        while not stop.is_set():
            number += 1
            try:
                await runner.run(place, f"w{worker}-{number}")
            except CommitOutcomeUnknown:  # no commit markers here: a lost COMMIT says so
                outcomes["commit unknown"] += 1
            except Exception as error:  # counted, and shown by the assertion
                details = retry_details(error)
                outcomes[details.reason.value if details else type(error).__name__] += 1
            else:
                outcomes["returned"] += 1
            finished_at.append(time.monotonic())

    try:
        async with asyncio.TaskGroup() as group:
            for worker in range(OPERATIONS):
                group.create_task(work(worker))
            await asyncio.sleep(1.0)
            await asyncio.to_thread(server.kill)
            await asyncio.sleep(DOWN)
            await asyncio.to_thread(server.start)
            restarted = time.monotonic()
            stop.set()  # each worker ends after the operation it is in
        ended = max(finished_at)
    finally:
        await engine.dispose()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()

    print(f"after the restart: {ended - restarted:.1f} s, outcomes {dict(outcomes)}")  # noqa: T201
    assert set(outcomes) <= {"returned", "commit unknown"}, dict(outcomes)
    assert ended - restarted < RECOVERY
