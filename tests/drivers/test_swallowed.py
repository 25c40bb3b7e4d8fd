"""An operation that catches a deadlock or a lock wait timeout is never committed, on any driver.

After a deadlock the server has rolled the whole transaction back; after a lock wait
timeout only the statement. Either way a COMMIT after the caught error would store part
of the operation, so the attempt is rolled back and the operation rerun.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from sqlalchemy.exc import DBAPIError

from tests.drivers.conftest import LockCycle, bump, insert_item
from uow import ErrorKind

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.orm import Session

    from tests.drivers.conftest import Database, DriverCase, Units

pytestmark = [pytest.mark.integration, pytest.mark.drivers]

SWALLOWED_NOTE = (
    "retrying-uow: the operation caught this error and returned; its attempt was not committed"
)


def test_swallowed_deadlock_is_not_committed(
    driver: DriverCase, db: Database, make_units: Callable[..., Units]
) -> None:
    """The code catches the 1213 and writes on: attempt 1 is rolled back, attempt 2 commits."""
    units = make_units(db.url(driver))
    cycle = LockCycle(db)
    caught: list[DBAPIError] = []

    def best_effort(attempt: int, session: Session) -> int:
        bump(session, "a")
        if attempt == 1:
            cycle.wait_for_a()
        try:
            bump(session, "b")
        except DBAPIError as error:  # "it is only a statistic"
            caught.append(error)
        insert_item(session, "after the catch", attempt)
        return attempt

    try:
        assert units.run(best_effort) == 2
    finally:
        other = cycle.finish()

    assert other == [None]
    assert units.attempts == [1, 2]
    assert db.items() == [("after the catch", 2)]
    assert db.counters() == {"a": 2, "b": 2}
    [record] = units.records
    assert (record.kind, record.errno) == (ErrorKind.DEADLOCK, 1213)
    assert [error.__notes__ for error in caught] == [[SWALLOWED_NOTE]]


def test_swallowed_lock_wait_timeout_is_not_committed(
    driver: DriverCase, db: Database, make_units: Callable[..., Units]
) -> None:
    """The code catches the 1205 (only the UPDATE was undone): the INSERT is not committed."""
    units = make_units(
        db.url(driver), connect_args={"init_command": "SET SESSION innodb_lock_wait_timeout=1"}
    )
    other = db.other()
    with other.cursor() as cursor:
        cursor.execute("UPDATE counters SET value = value + 10 WHERE name = 'a'")
    units.recorder.on_retry.append(lambda _details: other.rollback())

    caught: list[DBAPIError] = []

    def best_effort(attempt: int, session: Session) -> int:
        insert_item(session, "written", attempt)
        try:
            bump(session, "a")
        except DBAPIError as error:  # "the counter can wait"
            caught.append(error)
        return attempt

    try:
        assert units.run(best_effort) == 2
    finally:
        other.close()

    assert units.attempts == [1, 2]
    assert db.items() == [("written", 2)]
    assert db.counters() == {"a": 1, "b": 0}
    [record] = units.records
    assert (record.kind, record.errno) == (ErrorKind.LOCK_WAIT, 1205)
    assert [error.__notes__ for error in caught] == [[SWALLOWED_NOTE]]
