"""Permanent errors on every driver: the driver's own error reaches the caller after one attempt."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError, ProgrammingError

from adapters.mysql import errno_of
from tests.drivers.conftest import insert_item
from uow import ErrorKind, Reason, retry_details

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.orm import Session

    from tests.drivers.conftest import Database, DriverCase, Units

pytestmark = [pytest.mark.integration, pytest.mark.drivers]

ACCESS_DENIED_CLASS = {
    "pymysql": "OperationalError",
    "mysqlclient": "OperationalError",
    "mysql-connector": "ProgrammingError",
    "mariadb": "OperationalError",
    "asyncmy": "OperationalError",
    "aiomysql": "OperationalError",
}
"""The class of the driver's error for a wrong password (1045): the class says little."""


def assert_given_up_at_once(units: Units, error: BaseException, errno: int) -> None:
    assert units.attempts == [1]
    details = retry_details(error)
    assert details is not None
    assert (details.kind, details.errno, details.reason) == (
        ErrorKind.PERMANENT,
        errno,
        Reason.NOT_RETRYABLE,
    )
    assert units.records == [details]


def test_duplicate_key_is_the_drivers_integrity_error_after_one_attempt(
    driver: DriverCase, db: Database, make_units: Callable[..., Units]
) -> None:
    """A duplicate key (1062): SQLAlchemy's IntegrityError around the driver's, not retried."""
    units = make_units(db.url(driver))

    def add_counter(attempt: int, session: Session) -> None:
        insert_item(session, "before the duplicate", attempt)
        session.execute(sa.text("INSERT INTO counters (name, value) VALUES ('a', 0)"))

    with pytest.raises(IntegrityError) as caught:
        units.run(add_counter)

    assert isinstance(caught.value.orig, driver.dbapi.IntegrityError)
    assert errno_of(caught.value) == 1062
    assert_given_up_at_once(units, caught.value, 1062)
    assert db.items() == []
    assert db.counters() == {"a": 0, "b": 0}


def test_syntax_error_is_the_drivers_programming_error_after_one_attempt(
    driver: DriverCase, db: Database, make_units: Callable[..., Units]
) -> None:
    """A syntax error (1064): SQLAlchemy's ProgrammingError around the driver's, not retried."""
    units = make_units(db.url(driver))

    def typo(attempt: int, session: Session) -> None:
        insert_item(session, "before the typo", attempt)
        session.execute(sa.text("SELEC 1"))

    with pytest.raises(ProgrammingError) as caught:
        units.run(typo)

    assert isinstance(caught.value.orig, driver.dbapi.ProgrammingError)
    assert errno_of(caught.value) == 1064
    assert_given_up_at_once(units, caught.value, 1064)
    assert db.items() == []


def test_access_denied_at_connect_is_permanent(
    driver: DriverCase, db: Database, make_units: Callable[..., Units]
) -> None:
    """A wrong password (1045) at connect is never retried, whatever class the driver uses."""
    units = make_units(db.url(driver, password="not-" + db.server.password))

    with pytest.raises(DBAPIError) as caught:
        units.run(lambda attempt, session: insert_item(session, "never", attempt))

    assert type(caught.value.orig).__name__ == ACCESS_DENIED_CLASS[driver.name]
    assert errno_of(caught.value) == 1045
    assert_given_up_at_once(units, caught.value, 1045)
    assert db.items() == []
