"""A frozen server (SIGSTOP) on every driver: the time budget bounds the wait where it can.

Reads are bounded by the attempt's remaining budget: at run time where the driver allows
it (PyMySQL, mysql-connector-python, asyncmy), otherwise only by the connect-time bound
of the attempt that opened the connection (mysqlclient, MariaDB Connector/Python). The
async runner bounds every attempt with ``asyncio.timeout`` besides, which is all that
bounds aiomysql. The server is resumed by a timer whatever happens, so a wait the budget
does not bound shows up as a late success, never as a hang.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest
from sqlalchemy.exc import DBAPIError

from adapters.sqlalchemy._guard import READ_TIMEOUT_CAUSE
from tests.drivers.conftest import (
    QUICK,
    connection_id,
    freeze,
    insert_item,
    resume,
)
from uow import ErrorKind, Reason, retry_details

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable

    from sqlalchemy.orm import Session

    from tests.drivers.conftest import Database, DriverCase, Units

pytestmark = [pytest.mark.integration, pytest.mark.drivers]

BUDGET = 2.0
"""Seconds: the time budget of the operation that meets the frozen server."""
SLACK = 1.0
"""Seconds past the budget still counted as bounded: whole-second bounds round up, and
the machine is shared."""
THAW_AFTER = BUDGET + 3.0
"""Seconds after which the server is resumed: an unbounded wait ends here."""


def run_into_frozen_server(units: Units, db: Database) -> tuple[float, BaseException | None]:
    """Run an operation that connects, then meets the frozen server; return time and error."""
    timers: list[threading.Timer] = []

    def write_while_frozen(attempt: int, session: Session) -> None:
        connection_id(session)
        timers.append(freeze(db.server, thaw_after=THAW_AFTER))
        insert_item(session, "frozen", attempt)

    started = time.monotonic()
    try:
        units.run(write_while_frozen, policy=QUICK.override(timeout=BUDGET))
    except (DBAPIError, TimeoutError) as error:
        return time.monotonic() - started, error
    finally:
        for timer in timers:
            timer.cancel()
        resume(db.server)
    return time.monotonic() - started, None


def assert_bounded(elapsed: float, error: BaseException | None, units: Units) -> None:
    assert elapsed < BUDGET + SLACK, f"the attempt ended {elapsed:.2f} s after it began"
    assert error is not None
    details = retry_details(error)
    assert details is not None
    assert details.kind is ErrorKind.INTERRUPTED
    if units.driver.is_async and isinstance(error, TimeoutError):
        # The async runner's asyncio.timeout at the deadline came first.
        assert details.reason is Reason.TIME_BUDGET_EXHAUSTED
    else:
        # The driver's own read bound, set from the budget, ended the read.
        assert isinstance(error, DBAPIError)
        assert (details.cause, details.reason) == (READ_TIMEOUT_CAUSE, Reason.NOT_RETRYABLE)
    assert units.attempts == [1]


def test_new_connection_on_a_frozen_server_is_bounded_by_the_budget(
    driver: DriverCase, frozen_db: Database, make_units: Callable[..., Units]
) -> None:
    """A connection opened by the attempt: its reads end with the attempt's budget."""
    units = make_units(frozen_db.url(driver))

    elapsed, error = run_into_frozen_server(units, frozen_db)

    assert_bounded(elapsed, error, units)
    assert frozen_db.items() == []


def test_pooled_connection_on_a_frozen_server_is_bounded_by_the_budget(
    driver: DriverCase, frozen_db: Database, make_units: Callable[..., Units]
) -> None:
    """A connection opened under a 30 s budget, reused under a 2 s one: the 2 s bound it."""
    units = make_units(frozen_db.url(driver), policy=QUICK.override(timeout=30))
    units.run(lambda _attempt, session: connection_id(session))
    units.attempts.clear()

    elapsed, error = run_into_frozen_server(units, frozen_db)

    assert_bounded(elapsed, error, units)
    assert frozen_db.items() == []


CONNECT_TIMEOUT_ERRNO = {
    "pymysql": 2013,  # its read_timeout bounds the greeting; connect_timeout only the TCP connect
    "mysqlclient": 2013,
    "mysql-connector": 3024,  # its own ConnectionTimeoutError, a lost connection (not MySQL's 3024)
    "mariadb": 2013,
}
"""The errno of a connect that found the server stopped (TCP accepted, no greeting)."""


def test_connect_to_a_frozen_server_is_bounded_by_the_budget(
    driver: DriverCase, frozen_db: Database, make_units: Callable[..., Units]
) -> None:
    """A new connection to a stopped server: the attempt's budget bounds the handshake."""
    units = make_units(frozen_db.url(driver))
    timer = freeze(frozen_db.server, thaw_after=THAW_AFTER)
    started = time.monotonic()
    try:
        with pytest.raises((DBAPIError, TimeoutError)) as caught:
            units.run(
                lambda attempt, session: insert_item(session, "never", attempt),
                policy=QUICK.override(timeout=BUDGET),
            )
        elapsed = time.monotonic() - started
    finally:
        timer.cancel()
        resume(frozen_db.server)

    assert elapsed < BUDGET + SLACK, f"the connect ended {elapsed:.2f} s after it began"
    details = retry_details(caught.value)
    assert details is not None
    assert details.reason is Reason.TIME_BUDGET_EXHAUSTED
    if isinstance(caught.value, TimeoutError):  # the async runner's asyncio.timeout
        assert driver.is_async
        assert details.kind is ErrorKind.INTERRUPTED
    else:
        assert (details.kind, details.errno) == (
            ErrorKind.DISCONNECT,
            CONNECT_TIMEOUT_ERRNO[driver.name],
        )
    assert units.attempts == [1]
    assert frozen_db.items() == []
