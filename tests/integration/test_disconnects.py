"""Lost connections mid-operation: idle past wait_timeout, KILL CONNECTION, a read-only node."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from tests.integration.helpers import FAST_POLICY, Database, Recorder, make_runner
from tests.integration.model import Task
from uow import ErrorKind

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Engine

pytestmark = pytest.mark.integration

CR_SERVER_GONE_ERROR = 2006
CR_SERVER_LOST = 2013
ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION = 1792
SHORT_WAIT_TIMEOUT = "SET SESSION wait_timeout=1"


def connection_id(uow: Any) -> int:
    return int(uow.session.execute(text("SELECT CONNECTION_ID()")).scalar_one())


def test_naive_session_held_past_wait_timeout_loses_its_write(
    db: Database, make_engine: Callable[..., Engine]
) -> None:
    """Seed incident: a Session held idle past wait_timeout fails with 2006, writes nothing."""
    # pool_pre_ping does not help: it acts at checkout, and the Session holds the connection.
    engine = make_engine(db.url, init_command=SHORT_WAIT_TIMEOUT, pool_pre_ping=True)
    session = Session(engine)
    try:
        session.scalars(select(Task)).all()  # the transaction now holds a connection
        held = int(session.execute(text("SELECT CONNECTION_ID()")).scalar_one())
        session.add(Task(name="naive"))
        idle = db.wait_connection_gone(held)  # "the download": the server drops the idle link
        with pytest.raises(OperationalError) as caught:
            session.commit()
    finally:
        session.close()

    assert 0.5 < idle < 5  # wait_timeout=1, not something else, closed the connection
    assert caught.value.orig is not None
    assert caught.value.orig.args[0] == CR_SERVER_GONE_ERROR
    assert caught.value.connection_invalidated
    assert db.task_names() == []


def test_runner_reruns_operation_that_idled_past_wait_timeout(
    db: Database, make_engine: Callable[..., Engine], recorder: Recorder
) -> None:
    """Idle past wait_timeout after a read: attempt 1 fails with 2006, attempt 2 commits once."""
    engine = make_engine(db.url, init_command=SHORT_WAIT_TIMEOUT)
    runner = make_runner(engine, FAST_POLICY, recorder)
    seen: list[tuple[int, int]] = []  # (attempt number, connection id)

    def slow_import(uow: Any, name: str) -> Task:
        seen.append((uow.attempt.number, connection_id(uow)))
        uow.tasks.all()  # a read: this attempt's session holds its connection from here on
        if len(seen) == 1:
            db.wait_connection_gone(seen[0][1])  # idle past wait_timeout on the first attempt
        task: Task = uow.tasks.add(Task(name=name))
        return task

    task = runner.run(slow_import, "seed")

    assert [number for number, _ in seen] == [1, 2]
    assert seen[0][1] != seen[1][1]  # attempt 2 ran on a fresh connection
    assert db.task_names() == ["seed"]
    assert db.query("SELECT id FROM {db}.tasks") == [(task.id,)]
    [record] = recorder.records
    assert (record.attempt, record.kind, record.errno) == (1, ErrorKind.DISCONNECT, 2006)
    assert record.will_retry
    assert isinstance(record.error, OperationalError)
    assert record.error.connection_invalidated


def test_killed_connection_mid_operation_is_rerun(
    db: Database, make_engine: Callable[..., Engine], recorder: Recorder
) -> None:
    """KILL CONNECTION after the attempt's INSERT gives 2013; the rerun commits exactly one row."""
    engine = make_engine(db.url)
    runner = make_runner(engine, FAST_POLICY, recorder)
    seen: list[int] = []

    def create(uow: Any, name: str) -> Task | None:
        seen.append(connection_id(uow))
        uow.tasks.add(Task(name=name))
        uow.session.flush()  # the INSERT is on the server, inside the open transaction
        if len(seen) == 1:
            db.query("KILL CONNECTION %s", [seen[0]])
        task: Task | None = uow.tasks.by_name(name)  # attempt 1 meets the dead link here
        return task

    task = runner.run(create, "killed")

    assert len(seen) == 2
    assert seen[0] != seen[1]
    assert task is not None
    assert db.query("SELECT id, name FROM {db}.tasks") == [(task.id, "killed")]
    [record] = recorder.records
    assert (record.attempt, record.kind, record.errno) == (1, ErrorKind.DISCONNECT, CR_SERVER_LOST)
    assert record.will_retry
    assert record.error_type == "sqlalchemy.exc.OperationalError"


def test_read_only_transaction_is_failover_and_its_connection_is_dropped(
    db: Database, make_engine: Callable[..., Engine], recorder: Recorder
) -> None:
    """A 1792 (read-only) drops attempt 1's connection; attempt 2 runs on another and commits."""
    engine = make_engine(db.url)
    runner = make_runner(engine, FAST_POLICY, recorder)
    seen: list[int] = []

    def create(uow: Any, name: str) -> None:
        if not seen:
            # The connection now behaves like one to a read-only replica, for good.
            uow.session.execute(text("SET SESSION TRANSACTION READ ONLY"))
        seen.append(connection_id(uow))
        uow.tasks.add(Task(name=name))

    runner.run(create, "after-failover")

    assert len(seen) == 2
    assert seen[0] != seen[1]  # the pool did not hand the read-only connection back
    [record] = recorder.records
    assert (record.attempt, record.kind, record.errno) == (
        1,
        ErrorKind.FAILOVER,
        ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION,
    )
    assert isinstance(record.error, OperationalError)
    assert record.error.connection_invalidated
    db.wait_connection_gone(seen[0])  # closed by the client, not parked in the pool
    assert db.task_names() == ["after-failover"]

    def read_only(uow: Any) -> int:
        return int(uow.session.execute(text("SELECT @@session.tx_read_only")).scalar_one())

    assert [runner.run(read_only) for _ in range(3)] == [0, 0, 0]
