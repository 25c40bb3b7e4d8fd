"""Row-lock conflicts: a real deadlock (1213) and a lock wait timeout (1205)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy.exc import OperationalError

from tests.integration.helpers import FAST_POLICY, Threads, make_runner
from tests.integration.model import Task
from uow import ErrorKind, RetryDetails

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Engine

    from tests.integration.helpers import Database, Recorder

pytestmark = pytest.mark.integration

ER_LOCK_DEADLOCK = 1213
ER_LOCK_WAIT_TIMEOUT = 1205


def test_deadlock_between_two_operations_reruns_the_victim(
    db: Database, make_engine: Callable[..., Engine], recorder: Recorder
) -> None:
    """Two operations locking A and B in opposite order deadlock (1213); the victim reruns."""
    db.query("INSERT INTO {db}.counters (name, value) VALUES ('A', 0), ('B', 0)")
    engine = make_engine(db.url)
    runner = make_runner(engine, FAST_POLICY, recorder)
    both_hold_first_lock = threading.Barrier(2)
    attempts: dict[str, list[int]] = {"A-B": [], "B-A": []}

    def transfer(uow: Any, first: str, second: str) -> None:
        label = f"{first}-{second}"
        attempts[label].append(uow.attempt.number)
        one = uow.counters.locked(first)
        if len(attempts[label]) == 1:
            both_hold_first_lock.wait(timeout=10)
        other = uow.counters.locked(second)  # one of the two requests closes the cycle
        one.value += 1
        other.value += 1
        uow.tasks.add(Task(name=label))

    threads = Threads()
    threads.start("A-B", lambda: runner.run(transfer, "A", "B"))
    threads.start("B-A", lambda: runner.run(transfer, "B", "A"))
    threads.join(timeout=30)

    assert threads.errors == {}
    assert db.counters() == {"A": 2, "B": 2}  # both updates of both operations
    assert db.task_names() == ["A-B", "B-A"]
    assert sorted(attempts.values()) == [[1], [1, 2]]  # the victim alone reran, once
    [record] = recorder.records
    assert (record.attempt, record.kind, record.errno) == (1, ErrorKind.DEADLOCK, ER_LOCK_DEADLOCK)
    assert record.will_retry
    assert isinstance(record.error, OperationalError)


def test_lock_wait_timeout_rolls_back_the_whole_attempt_and_reruns(
    db: Database, make_engine: Callable[..., Engine], recorder: Recorder
) -> None:
    """A 1205 after an INSERT rolls back the whole attempt; the rerun leaves one X, one update."""
    db.query("INSERT INTO {db}.counters (name, value) VALUES ('L', 0)")
    locker = db.raw_connection()
    observer = db.raw_connection(autocommit=True)
    dirty_x_after_attempt_1: list[int] = []

    def release_lock(details: RetryDetails, /) -> None:
        """Runs before the retry, after the runner has rolled attempt 1 back."""
        if details.kind is ErrorKind.LOCK_WAIT:
            with observer.cursor() as cursor:  # READ UNCOMMITTED: pending rows count too
                cursor.execute("SELECT COUNT(*) FROM tasks WHERE name = 'X'")
                dirty_x_after_attempt_1.append(cursor.fetchone()[0])
            locker.rollback()

    x_ids: list[int] = []

    def insert_then_update(uow: Any) -> None:
        task = uow.tasks.add(Task(name="X"))
        uow.session.flush()  # X is on the server (it has its auto-increment id), not committed
        x_ids.append(task.id)
        counter = uow.counters.get("L")
        counter.value += 1  # the UPDATE, sent by the final flush, waits for the locker's row lock

    try:
        with observer.cursor() as cursor:
            cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ UNCOMMITTED")
        with locker.cursor() as cursor:
            cursor.execute("SELECT value FROM counters WHERE name = 'L' FOR UPDATE")
        engine = make_engine(db.url, init_command="SET SESSION innodb_lock_wait_timeout=1")
        runner = make_runner(engine, FAST_POLICY, recorder, release_lock)
        runner.run(insert_then_update)
    finally:
        locker.close()
        observer.close()

    assert len(x_ids) == 2
    assert x_ids[0] != x_ids[1]  # attempt 1's INSERT really ran on the server
    assert dirty_x_after_attempt_1 == [0]  # ... and was undone before the rerun started
    assert db.query("SELECT id, name FROM {db}.tasks") == [(x_ids[1], "X")]
    assert db.counters() == {"L": 1}
    [record] = recorder.records
    assert (record.attempt, record.kind, record.errno) == (
        1,
        ErrorKind.LOCK_WAIT,
        ER_LOCK_WAIT_TIMEOUT,
    )
    assert record.will_retry
    assert isinstance(record.error, OperationalError)
