"""Transient failures on every driver: each is classified by errno and the operation rerun.

Idle past ``wait_timeout``, ``KILL CONNECTION``, a server crash and restart, a deadlock
and a lock wait timeout, each against a real MariaDB; afterwards the database holds
exactly one attempt's writes.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING

import pytest
from sqlalchemy.exc import DBAPIError

from tests.drivers.conftest import (
    QUICK,
    LockCycle,
    bump,
    connection_id,
    insert_item,
)
from uow import ErrorKind, Reason, retry_details

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.orm import Session

    from tests.drivers.conftest import Database, DriverCase, Units

pytestmark = [pytest.mark.integration, pytest.mark.drivers]

IDLE_MARGIN = 0.3
"""Seconds past the moment the server dropped the connection: idle > wait_timeout."""

GONE_AFTER_IDLE = {
    "pymysql": {2006},
    "mysqlclient": {2006},
    "mysql-connector": {-1},  # its cursor() pings first: "MySQL Connection not available"
    "mariadb": {2006, 5014},  # 5014: Connector/C's write error, when the reset came first
    "asyncmy": {2013},
    "aiomysql": {2013},
}
"""The errnos each driver reports for the first statement on a connection the server closed
for idling: the same event has four different numbers."""
LOST_AFTER_KILL = {
    "pymysql": {2013},
    "mysqlclient": {2013},
    "mysql-connector": {-1},
    "mariadb": {2013, 5014},
    "asyncmy": {2013},
    "aiomysql": {2013},
}
"""The errnos of the first statement after ``KILL CONNECTION`` or a server crash."""
SHORT_WAIT_TIMEOUT = "SET SESSION wait_timeout=1"
IDLE_CAUSE = re.compile(r"idle \d+\.\d s in a transaction; server wait_timeout is 1 s")


def test_idle_past_wait_timeout_then_a_write_is_rerun(
    driver: DriverCase, db: Database, make_units: Callable[..., Units]
) -> None:
    """A transaction idle past wait_timeout: the write fails, its cause is named, one rerun."""
    units = make_units(db.url(driver), connect_args={"init_command": SHORT_WAIT_TIMEOUT})

    def slow_import(attempt: int, session: Session) -> int:
        held = connection_id(session)
        if attempt == 1:
            db.wait_connection_gone(held)  # slow work inside the transaction
            time.sleep(IDLE_MARGIN)
        insert_item(session, "imported", attempt)
        return attempt

    assert units.run(slow_import) == 2

    assert units.attempts == [1, 2]
    assert db.items() == [("imported", 2)]
    [record] = units.records
    assert record.kind is ErrorKind.DISCONNECT
    assert record.errno in GONE_AFTER_IDLE[driver.name]
    assert record.will_retry
    assert record.cause is not None
    assert IDLE_CAUSE.fullmatch(record.cause), record.cause


def test_guard_warns_of_the_idle_transaction_and_names_it_on_give_up(
    driver: DriverCase,
    db: Database,
    make_units: Callable[..., Units],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The guard's WARNING comes before the lost write; the error given up on names the cause."""
    caplog.set_level(logging.WARNING, logger="retrying_uow")
    units = make_units(
        db.url(driver),
        policy=QUICK.override(attempts=1),
        connect_args={"init_command": SHORT_WAIT_TIMEOUT},
    )

    def slow_import(attempt: int, session: Session) -> None:
        db.wait_connection_gone(connection_id(session))
        time.sleep(IDLE_MARGIN)
        insert_item(session, "never", attempt)

    with pytest.raises(DBAPIError) as caught:
        units.run(slow_import)

    details = retry_details(caught.value)
    assert details is not None
    assert (details.reason, details.kind) == (Reason.ATTEMPTS_EXHAUSTED, ErrorKind.DISCONNECT)
    assert details.cause is not None
    assert IDLE_CAUSE.fullmatch(details.cause), details.cause
    assert caught.value.__notes__[-1].endswith(f"; likely cause: {details.cause}")
    assert db.items() == []
    messages = [r.getMessage() for r in caplog.records if r.name == "retrying_uow"]
    assert any("past the server's wait_timeout of 1 s" in message for message in messages)


def test_kill_connection_mid_transaction_is_rerun(
    driver: DriverCase, db: Database, make_units: Callable[..., Units]
) -> None:
    """KILL CONNECTION between two writes: attempt 1 is lost whole, attempt 2 writes both."""
    units = make_units(db.url(driver))

    def two_writes(attempt: int, session: Session) -> int:
        insert_item(session, "first", attempt)
        if attempt == 1:
            held = connection_id(session)
            db.query(f"KILL CONNECTION {held}")
            db.wait_connection_gone(held)
        insert_item(session, "second", attempt)
        return attempt

    assert units.run(two_writes) == 2

    assert units.attempts == [1, 2]
    assert db.items() == [("first", 2), ("second", 2)]
    [record] = units.records
    assert record.kind is ErrorKind.DISCONNECT
    assert record.errno in LOST_AFTER_KILL[driver.name]
    assert record.cause == "the server closed the connection (KILL, crash or restart)"


def test_server_restart_under_a_held_transaction_is_rerun(
    driver: DriverCase, private_db: Database, make_units: Callable[..., Units]
) -> None:
    """The server crashes and restarts while an attempt holds its transaction: one rerun."""
    server = private_db.server
    units = make_units(private_db.url(driver), pool_size=2)
    units.run(lambda _attempt, session: connection_id(session))  # a pooled connection

    def write_across_restart(attempt: int, session: Session) -> int:
        insert_item(session, "before", attempt)
        if attempt == 1:
            server.kill()
            server.start()
        insert_item(session, "after", attempt)
        return attempt

    assert units.run(write_across_restart) == 2

    assert units.attempts == [1, 1, 2]
    assert private_db.items() == [("before", 2), ("after", 2)]
    [record] = units.records
    assert record.kind is ErrorKind.DISCONNECT
    assert record.errno in LOST_AFTER_KILL[driver.name]


def test_deadlock_is_rerun_and_both_transactions_commit_once(
    driver: DriverCase, db: Database, make_units: Callable[..., Units]
) -> None:
    """The attempt closes a lock cycle: InnoDB picks it (1213), the other one commits, rerun."""
    units = make_units(db.url(driver))
    cycle = LockCycle(db)

    def a_then_b(attempt: int, session: Session) -> int:
        bump(session, "a")
        if attempt == 1:
            cycle.wait_for_a()
        bump(session, "b")  # closes the cycle: this transaction is the victim
        return attempt

    try:
        assert units.run(a_then_b) == 2
    finally:
        other = cycle.finish()

    assert other == [None]
    assert units.attempts == [1, 2]
    assert db.counters() == {"a": 2, "b": 2}
    [record] = units.records
    assert (record.kind, record.errno) == (ErrorKind.DEADLOCK, 1213)


def test_lock_wait_timeout_is_rerun(
    driver: DriverCase, db: Database, make_units: Callable[..., Units]
) -> None:
    """innodb_lock_wait_timeout=1 runs out (1205): the attempt is rolled back whole and rerun."""
    units = make_units(
        db.url(driver), connect_args={"init_command": "SET SESSION innodb_lock_wait_timeout=1"}
    )
    other = db.other()
    with other.cursor() as cursor:
        cursor.execute("UPDATE counters SET value = value + 10 WHERE name = 'a'")
    units.recorder.on_retry.append(lambda _details: other.rollback())

    def write_then_wait(attempt: int, session: Session) -> int:
        insert_item(session, "written", attempt)
        bump(session, "a")
        return attempt

    try:
        started = time.monotonic()
        assert units.run(write_then_wait) == 2
        elapsed = time.monotonic() - started
    finally:
        other.close()

    assert units.attempts == [1, 2]
    assert db.items() == [("written", 2)]
    assert db.counters() == {"a": 1, "b": 0}
    [record] = units.records
    assert (record.kind, record.errno) == (ErrorKind.LOCK_WAIT, 1205)
    assert 0.9 < elapsed < 5
