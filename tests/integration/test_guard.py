"""The long-transaction guard against MariaDB: its warnings, and the cause it names on 2006."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError

from servers.mysql_proxy import FaultProxy
from tests.integration.helpers import FAST_POLICY, Threads, make_runner
from tests.integration.model import Task
from uow import ErrorKind, RetryPolicy, retry_details

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Engine

    from servers.mariadb import MariaDBServer
    from tests.integration.helpers import Database, Recorder

pytestmark = pytest.mark.integration

CR_SERVER_GONE_ERROR = 2006
SHORT_WAIT_TIMEOUT = "SET SESSION wait_timeout=1"
IDLE_MARGIN = 0.3  # past the moment the server dropped the connection, so idle > wait_timeout


@pytest.fixture
def warnings_logged(caplog: pytest.LogCaptureFixture) -> Callable[[], list[logging.LogRecord]]:
    caplog.set_level(logging.WARNING, logger="retrying_uow")

    def records() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "retrying_uow"]

    return records


def connection_id(uow: Any) -> int:
    return int(uow.session.execute(text("SELECT CONNECTION_ID()")).scalar_one())


def guard_warnings(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if r.getMessage().startswith("transaction of ")]


def test_long_transaction_is_warned_about_once(
    db: Database,
    make_engine: Callable[..., Engine],
    warnings_logged: Callable[[], list[logging.LogRecord]],
) -> None:
    """An attempt open past warn_transaction_after gets one WARNING naming the operation."""
    engine = make_engine(db.url)
    runner = make_runner(engine, FAST_POLICY.override(warn_transaction_after=0.5))

    def slow_report(uow: Any) -> None:
        uow.tasks.all()
        time.sleep(0.8)  # between two statements of one transaction
        uow.tasks.add(Task(name="report"))
        uow.session.flush()
        uow.tasks.all()

    runner.run(slow_report)

    [warning] = [r for r in warnings_logged() if "has been open" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert warning.getMessage().startswith("transaction of test_long_transaction_is_warned_")
    assert "(warn_transaction_after=0.5 s)" in warning.getMessage()
    assert warning.uow_open_for > 0.8  # type: ignore[attr-defined]
    assert guard_warnings(warnings_logged()) == [warning.getMessage()]
    assert db.task_names() == ["report"]


def test_short_operations_are_not_warned_about(
    db: Database,
    make_engine: Callable[..., Engine],
    warnings_logged: Callable[[], list[logging.LogRecord]],
) -> None:
    """Quick operations, low thresholds and a short wait_timeout: no WARNING at all."""
    engine = make_engine(db.url, init_command=SHORT_WAIT_TIMEOUT)
    runner = make_runner(engine, FAST_POLICY.override(warn_transaction_after=0.5))

    for name in ("a", "b", "c"):
        runner.run(lambda uow, name: uow.tasks.add(Task(name=name)), name)
    runner.run(lambda uow: uow.tasks.all())

    assert warnings_logged() == []
    assert db.task_names() == ["a", "b", "c"]


def test_idle_transaction_is_warned_about_and_named_as_the_cause(
    db: Database,
    make_engine: Callable[..., Engine],
    recorder: Recorder,
    warnings_logged: Callable[[], list[logging.LogRecord]],
) -> None:
    """Idle past wait_timeout mid-transaction: a WARNING, then 2006 whose cause is the idle gap."""
    engine = make_engine(db.url, init_command=SHORT_WAIT_TIMEOUT)
    runner = make_runner(engine, FAST_POLICY, recorder)

    def download_inside(uow: Any) -> None:
        held = connection_id(uow)
        if uow.attempt.number == 1:
            db.wait_connection_gone(held)  # the "download", inside the transaction
            time.sleep(IDLE_MARGIN)
        uow.tasks.add(Task(name="imported"))

    runner.run(download_inside)

    [idle] = guard_warnings(warnings_logged())
    assert idle.startswith("transaction of test_idle_transaction_is_warned_")
    assert "past the server's wait_timeout of 1 s" in idle
    [record] = recorder.records
    assert (record.attempt, record.kind, record.errno) == (
        1,
        ErrorKind.DISCONNECT,
        CR_SERVER_GONE_ERROR,
    )
    assert record.cause is not None
    assert record.cause.startswith("idle ")
    assert record.cause.endswith(" s in a transaction; server wait_timeout is 1 s")
    [retry_line] = [r.getMessage() for r in warnings_logged() if "retrying" in r.getMessage()]
    assert f"cause={record.cause!r}" in retry_line
    assert db.task_names() == ["imported"]


def test_operation_that_gives_up_carries_the_cause_in_its_notes(
    db: Database,
    make_engine: Callable[..., Engine],
    recorder: Recorder,
    warnings_logged: Callable[[], list[logging.LogRecord]],
) -> None:
    """With one attempt the 2006 reaches the caller, its notes naming the idle transaction."""
    engine = make_engine(db.url, init_command=SHORT_WAIT_TIMEOUT)
    runner = make_runner(engine, FAST_POLICY.override(attempts=1), recorder)

    def download_inside(uow: Any) -> None:
        db.wait_connection_gone(connection_id(uow))
        time.sleep(IDLE_MARGIN)
        uow.tasks.add(Task(name="never"))

    with pytest.raises(OperationalError) as caught:
        runner.run(download_inside)

    details = retry_details(caught.value)
    assert details is not None
    assert (details.reason, details.errno) == ("attempts exhausted", CR_SERVER_GONE_ERROR)
    assert details.cause is not None
    assert " s in a transaction; server wait_timeout is 1 s" in details.cause
    [note] = caught.value.__notes__
    assert note.endswith(f"; likely cause: {details.cause}")
    [give_up] = [r for r in warnings_logged() if r.levelno == logging.ERROR]
    assert f"cause={details.cause!r}" in give_up.getMessage()
    assert give_up.uow_cause == details.cause  # type: ignore[attr-defined]
    assert db.task_names() == []


def test_connection_that_idled_in_the_pool_is_named_as_such(
    db: Database,
    make_engine: Callable[..., Engine],
    recorder: Recorder,
    warnings_logged: Callable[[], list[logging.LogRecord]],
) -> None:
    """A pooled connection dropped by wait_timeout: the cause names the pool, not a transaction."""
    engine = make_engine(db.url, init_command=SHORT_WAIT_TIMEOUT)
    runner = make_runner(engine, FAST_POLICY, recorder)
    pooled = runner.run(connection_id)
    db.wait_connection_gone(pooled)  # idle in the pool, past wait_timeout
    time.sleep(IDLE_MARGIN)

    runner.run(lambda uow: uow.tasks.add(Task(name="after-idle")))

    [record] = recorder.records
    assert (record.attempt, record.errno) == (1, CR_SERVER_GONE_ERROR)
    assert record.cause is not None
    assert " s in the pool; server wait_timeout is 1 s" in record.cause
    assert "pool_recycle" in record.cause
    assert guard_warnings(warnings_logged()) == []  # no transaction sat idle
    assert db.task_names() == ["after-idle"]


def test_first_wait_timeout_read_is_bounded_by_the_time_budget(
    db: Database, mariadb: MariaDBServer
) -> None:
    """A silent network during the guard's first read still ends the attempt within budget."""
    with FaultProxy(mariadb.host, mariadb.port) as proxy:
        url = mariadb.url(db.name, port=proxy.port)
        # No read_timeout of the driver's own: only the budget bounds reads, as by default.
        engine = sa.create_engine(url, connect_args={"ssl_disabled": True, "connect_timeout": 5})
        try:
            with engine.connect() as connection:  # the user's own: wait_timeout not read yet
                connection.execute(text("SELECT 1"))
            runner = make_runner(engine, RetryPolicy(attempts=1, timeout=1))
            proxy.blackhole_all()
            threads = Threads()
            threads.start("read", lambda: runner.run(lambda uow: uow.tasks.all()))
            time.sleep(2.5)  # the budget (1 s) and the read bound it sets, with room to spare
            ended = "read" in threads.durations
        finally:
            proxy.stop()  # closes the blackholed connection: a blocked read ends now
            engine.dispose()
        threads.join(10)
    assert ended, "the attempt was still blocked 1.5 s after its time budget ran out"
    assert isinstance(threads.errors.get("read"), DBAPIError)
