"""The server crashes: operations wait it out within their budget, or give up when it stays down."""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy.exc import OperationalError

from tests.integration.helpers import Recorder, Threads, make_runner
from tests.integration.model import Task
from uow import ErrorKind, RetryPolicy, retry_details

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Engine

    from servers.mariadb import MariaDBServer
    from tests.integration.helpers import Database

pytestmark = pytest.mark.integration

CR_CONN_HOST_ERROR = 2003
POOL_SIZE = 5
OUTAGE = 1.0


def test_operations_survive_server_crash_and_restart(
    private_mariadb: MariaDBServer,
    private_db: Database,
    make_engine: Callable[..., Engine],
    recorder: Recorder,
) -> None:
    """Operations started during a kill -9 and restart 1 s later each commit once, in budget."""
    engine = make_engine(private_db.url, pool_size=POOL_SIZE, max_overflow=0)
    # No count: lost connections and refused connects are retried until the budget.
    policy = RetryPolicy(timeout=20, wait_initial=0.05, wait_max=0.25)
    runner = make_runner(engine, policy, recorder)
    attempts: dict[str, list[int]] = {}
    all_connected = threading.Barrier(POOL_SIZE)

    def warm(uow: Any, name: str) -> None:
        uow.tasks.add(Task(name=name))
        uow.session.flush()
        all_connected.wait(timeout=10)  # every pool connection is in use at once

    def create(uow: Any, name: str) -> Task:
        attempts.setdefault(name, []).append(uow.attempt.number)
        task: Task = uow.tasks.add(Task(name=name))
        return task

    warming = Threads()
    for i in range(POOL_SIZE):
        warming.start(f"warm-{i}", functools.partial(runner.run, warm, f"warm-{i}"))
    warming.join(timeout=30)
    assert warming.errors == {}
    assert engine.pool.checkedin() == POOL_SIZE  # type: ignore[attr-defined]
    assert recorder.records == []

    private_mariadb.kill()
    during = Threads()
    for i in range(POOL_SIZE):
        during.start(f"outage-{i}", functools.partial(runner.run, create, f"outage-{i}"))
    time.sleep(OUTAGE)
    private_mariadb.restart()
    during.join(timeout=policy.timeout + 10)

    assert during.errors == {}
    names = [f"outage-{i}" for i in range(POOL_SIZE)]
    returned = {key: getattr(task, "name", None) for key, task in during.results.items()}
    assert returned == {name: name for name in names}  # each call returned its own Task
    assert private_db.task_names() == sorted(names + [f"warm-{i}" for i in range(POOL_SIZE)])
    assert all(OUTAGE * 0.9 < duration < policy.timeout for duration in during.durations.values())
    for name in names:  # every operation was rerun, numbered 1, 2, ... without gaps
        assert len(attempts[name]) > 1
        assert attempts[name] == list(range(1, len(attempts[name]) + 1))
    retries = recorder.retries
    assert len(retries) == sum(len(numbers) - 1 for numbers in attempts.values())
    assert len(recorder.records) == len(retries)  # nobody gave up
    assert {record.kind for record in retries} >= {ErrorKind.DISCONNECT, ErrorKind.UNAVAILABLE}
    assert {record.errno for record in retries if record.kind is ErrorKind.UNAVAILABLE} == {
        CR_CONN_HOST_ERROR
    }


def test_server_down_longer_than_budget_gives_up_with_2003(
    private_mariadb: MariaDBServer,
    private_db: Database,
    make_engine: Callable[..., Engine],
    recorder: Recorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Server down past timeout=2: raises 2003 within timeout + one backoff step, logs a give-up."""
    engine = make_engine(private_db.url)
    policy = RetryPolicy(timeout=2, wait_initial=0.1, wait_max=0.4)
    assert policy.max_attempts(ErrorKind.UNAVAILABLE) is None  # only time bounds it
    runner = make_runner(engine, policy, recorder)
    attempts: list[int] = []

    def create(uow: Any, name: str) -> None:
        attempts.append(uow.attempt.number)
        uow.tasks.add(Task(name=name))

    runner.run(create, "before")  # the pool now holds a connection to the server
    attempts.clear()
    private_mariadb.kill()

    with caplog.at_level(logging.WARNING, logger="retrying_uow"):
        started = time.monotonic()
        with pytest.raises(OperationalError) as caught:
            runner.run(create, "during")
        elapsed = time.monotonic() - started

    error = caught.value
    assert error.orig is not None
    assert error.orig.args[0] == CR_CONN_HOST_ERROR
    details = retry_details(error)
    assert details is not None
    assert details.attempt == len(attempts) > 1
    assert attempts == list(range(1, len(attempts) + 1))
    assert (details.kind, details.errno) == (ErrorKind.UNAVAILABLE, CR_CONN_HOST_ERROR)
    assert not details.will_retry
    assert details.reason == "time budget exhausted"
    assert details.max_attempts is None
    assert policy.timeout - policy.wait_max <= elapsed <= policy.timeout + policy.wait_max
    # The stale pooled connection fails first (disconnect); every later attempt cannot connect.
    assert recorder.records[0].kind is ErrorKind.DISCONNECT
    assert {record.kind for record in recorder.records[1:]} == {ErrorKind.UNAVAILABLE}
    assert recorder.records[-1] == details
    logged = [record for record in caplog.records if record.name == "retrying_uow"]
    gave_up = [record for record in logged if record.levelno == logging.ERROR]
    assert len(gave_up) == 1
    assert "giving up" in gave_up[0].getMessage()
    assert [record.levelno for record in logged] == [logging.WARNING] * (details.attempt - 1) + [
        logging.ERROR
    ]
