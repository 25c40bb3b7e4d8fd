"""Classification by errno on every driver's own exception classes.

The drivers disagree on classes (2013 is an ``InterfaceError`` with mysql-connector-python
and MariaDB Connector/Python, an ``OperationalError`` elsewhere; a deadlock is an
``InternalError`` with mysql-connector-python) and on where the number is kept (``errno``
or the first argument). Faults injected with ``uow.testing.inject`` are built by the same
recipes, as the driver would raise them, so a scenario written against them means the same
on every driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import sqlalchemy.exc as sa_exc

from adapters.mysql import classify, errno_of
from tests.drivers.conftest import BY_NAME, insert_item
from uow import ErrorKind
from uow.testing import Fault, inject

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.orm import Session

    from tests.drivers.conftest import Database, DriverCase, Units

pytestmark = [pytest.mark.integration, pytest.mark.drivers]

FAULTS = {
    "2013": (Fault.disconnect(at=2), 2013),
    "2006": (Fault.disconnect(at=2, errno=2006), 2006),
    "1213": (Fault.deadlock(at=2), 1213),
    "1205": (Fault.lock_wait(at=2), 1205),
}


@pytest.mark.parametrize("case", FAULTS.values(), ids=FAULTS.keys())
def test_injected_fault_is_the_drivers_own_error_and_is_rerun(
    driver: DriverCase,
    db: Database,
    make_units: Callable[..., Units],
    case: tuple[Fault, int],
) -> None:
    """An injected fault raises the driver's class with the errno where the driver keeps it."""
    fault, errno = case
    units = make_units(db.url(driver))

    def two_writes(attempt: int, session: Session) -> int:
        insert_item(session, "first", attempt)
        insert_item(session, "second", attempt)
        return attempt

    with inject(fault) as injection:
        assert units.run(two_writes) == 2

    assert injection.fired == (fault,)
    assert units.attempts == [1, 2]
    assert db.items() == [("first", 2), ("second", 2)]
    [record] = units.records
    assert (record.kind, record.errno) == (fault.kind, errno)
    assert isinstance(record.error, sa_exc.DBAPIError)
    original = record.error.orig
    assert type(original).__module__.split(".")[0] == driver.errors.split(".")[0]
    assert isinstance(original, driver.dbapi.Error)


def test_connector_parameter_error_raised_from_a_lost_connection_is_a_disconnect() -> None:
    """mysql-connector's ProgrammingError (-1) from a lost connection is classified by its cause.

    Its first statement with parameters on a new connection reads ``sql_mode`` first; if the
    connection is lost there, the driver raises "Failed processing pyformat-parameters".
    """
    errors = BY_NAME["mysql-connector"].dbapi
    lost = errors.OperationalError("MySQL Connection not available")
    try:
        try:
            raise lost
        except errors.Error as error:
            msg = f"Failed processing pyformat-parameters; {error}"
            raise errors.ProgrammingError(msg) from error
    except errors.ProgrammingError as error:
        wrapped = sa_exc.ProgrammingError("INSERT ...", {}, error)

    assert errno_of(wrapped) == -1
    assert classify(wrapped).kind is ErrorKind.DISCONNECT
    unrelated = errors.ProgrammingError("Failed processing pyformat-parameters; bad type")
    unrelated.__cause__ = TypeError("bad type")
    assert classify(sa_exc.ProgrammingError("INSERT ...", {}, unrelated)).kind is (
        ErrorKind.PERMANENT
    )


def test_connector_own_timeouts_are_lost_connections_unlike_the_servers_3024() -> None:
    """mysql-connector's read/connect timeouts reuse 3024; unlike MySQL's own, they end the link.

    After its ``ReadTimeoutError`` the driver has closed the connection (so has PyMySQL
    after its 2013 "timed out"); MySQL's 3024 (max_execution_time) leaves it usable.
    """
    errors = BY_NAME["mysql-connector"].dbapi
    for own in (errors.ReadTimeoutError(errno=3024), errors.ConnectionTimeoutError(errno=3024)):
        assert classify(sa_exc.DBAPIError("SELECT 1", {}, own)).kind is ErrorKind.DISCONNECT
    server = errors.DatabaseError(msg="maximum statement execution time exceeded", errno=3024)
    wrapped = sa_exc.DatabaseError("SELECT 1", {}, server)
    assert classify(wrapped).kind is ErrorKind.INTERRUPTED
