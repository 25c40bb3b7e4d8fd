"""MySQL/MariaDB error classification on real driver and SQLAlchemy exception objects."""

from __future__ import annotations

from typing import Any

import pymysql
import pytest
import sqlalchemy.exc as sa_exc

from adapters import mysql
from adapters.mysql._errors import KIND_ATTRIBUTE
from adapters.sqlalchemy import classify_generic
from tests.unit.conftest import wrapped
from uow import Classification, ErrorKind

PERMANENT = ErrorKind.PERMANENT
OPERATIONAL = pymysql.err.OperationalError

TABLE: list[tuple[int, str, ErrorKind]] = [
    (2006, "MySQL server has gone away", ErrorKind.DISCONNECT),
    (2013, "Lost connection to MySQL server during query", ErrorKind.DISCONNECT),
    (2014, "Command Out of Sync", ErrorKind.DISCONNECT),
    (2045, "Can't open shared memory; no answer from server", ErrorKind.DISCONNECT),
    (2055, "Lost connection to MySQL server at 'reading', system error: 104", ErrorKind.DISCONNECT),
    (4031, "The client was disconnected by the server because of inactivity", ErrorKind.DISCONNECT),
    (1927, "Connection was killed", ErrorKind.DISCONNECT),
    (5013, "Read error: Connection reset by peer", ErrorKind.DISCONNECT),
    (5014, "Write error: Broken pipe", ErrorKind.DISCONNECT),
    (2002, "Can't connect to local MySQL server through socket", ErrorKind.UNAVAILABLE),
    (
        2003,
        "Can't connect to MySQL server on 'db' ([Errno 111] Connection refused)",
        ErrorKind.UNAVAILABLE,
    ),
    (1040, "Too many connections", ErrorKind.UNAVAILABLE),
    (1203, "User app already has more than 'max_user_connections'", ErrorKind.UNAVAILABLE),
    (
        1213,
        "Deadlock found when trying to get lock; try restarting transaction",
        ErrorKind.DEADLOCK,
    ),
    (1205, "Lock wait timeout exceeded; try restarting transaction", ErrorKind.LOCK_WAIT),
    (
        3572,
        "Statement aborted because lock(s) could not be acquired immediately",
        ErrorKind.LOCK_WAIT,
    ),
    (1290, "The MariaDB server is running with the --read-only option", ErrorKind.FAILOVER),
    (1792, "Cannot execute statement in a READ ONLY transaction", ErrorKind.FAILOVER),
    (1836, "Running in read-only mode", ErrorKind.FAILOVER),
    (1047, "WSREP has not yet prepared node for application use", ErrorKind.FAILOVER),
    (1180, 'Got error 6 "No such device or address" during COMMIT', ErrorKind.FAILOVER),
    (1053, "Server shutdown in progress", ErrorKind.FAILOVER),
    (1317, "Query execution was interrupted", ErrorKind.INTERRUPTED),
    (
        3024,
        "Query execution was interrupted, maximum statement execution time exceeded",
        ErrorKind.INTERRUPTED,
    ),
    (1045, "Access denied for user 'app'@'localhost' (using password: YES)", PERMANENT),
    (1153, "Got a packet bigger than 'max_allowed_packet' bytes", PERMANENT),
    (9999, "Some future error", PERMANENT),
]


@pytest.mark.parametrize(("errno", "message", "kind"), TABLE, ids=[str(row[0]) for row in TABLE])
def test_wrapped_operational_error(errno: int, message: str, kind: ErrorKind) -> None:
    """A PyMySQL OperationalError wrapped by SQLAlchemy maps by errno, and keeps the errno."""
    error = wrapped(OPERATIONAL(errno, message))
    assert isinstance(error, sa_exc.OperationalError)
    assert mysql.classify(error) == Classification(kind, errno)


@pytest.mark.parametrize(("errno", "message", "kind"), TABLE, ids=[str(row[0]) for row in TABLE])
def test_raw_driver_error(errno: int, message: str, kind: ErrorKind) -> None:
    """An unwrapped PyMySQL error (e.g. from a raw connection) maps the same way."""
    assert mysql.classify(OPERATIONAL(errno, message)) == Classification(kind, errno)


def test_table_covers_the_design_examples() -> None:
    """The errno table is exactly the rows above: every transient errno has its kind."""
    expected = {row[0]: row[2] for row in TABLE if row[2] is not PERMANENT}
    assert dict(mysql.ERRNO_KINDS) == expected


def test_errno_table_is_read_only() -> None:
    """The table cannot be changed at run time by accident."""
    with pytest.raises(TypeError):
        mysql.ERRNO_KINDS[1062] = ErrorKind.DEADLOCK  # type: ignore[index]


def test_lost_connection_invalidated_by_sqlalchemy() -> None:
    """2013 wrapped with connection_invalidated=True (what SQLAlchemy does) is a disconnect."""
    error = wrapped(
        OPERATIONAL(2013, "Lost connection to MySQL server during query"), invalidated=True
    )
    assert mysql.classify(error) == Classification(ErrorKind.DISCONNECT, 2013)


@pytest.mark.parametrize("invalidated", [True, False])
def test_read_timeout_of_the_users_own_is_a_disconnect(invalidated: bool) -> None:
    """PyMySQL's 2013 '(timed out)' from a ``read_timeout`` the user set is a disconnect.

    Only the read bound the adapter set itself (flagged on the error, below) means the
    operation's time is up; the user's own bound guards against a silent network, which
    a rerun on a fresh connection cures.
    """
    orig = OPERATIONAL(2013, "Lost connection to MySQL server during query (timed out)")
    expected = Classification(ErrorKind.DISCONNECT, 2013)
    assert mysql.classify(wrapped(orig, invalidated=invalidated)) == expected
    assert mysql.classify(orig) == expected


def test_read_bound_flagged_by_the_adapter_is_interrupted() -> None:
    """A 2013 the adapter marked as its own read bound firing is interrupted, errno kept."""
    error = wrapped(OPERATIONAL(2013, "Lost connection to MySQL server during query (timed out)"))
    setattr(error, KIND_ATTRIBUTE, ErrorKind.INTERRUPTED)
    assert mysql.classify(error) == Classification(ErrorKind.INTERRUPTED, 2013)


def test_timed_out_only_matters_for_disconnects() -> None:
    """'timed out' in a deadlock or unknown error's message does not change its kind."""
    assert mysql.classify(OPERATIONAL(1213, "Deadlock (timed out)")).kind is ErrorKind.DEADLOCK
    assert mysql.classify(OPERATIONAL(1234, "whatever timed out")).kind is PERMANENT


def test_integrity_error_is_permanent() -> None:
    """A duplicate key (1062) is permanent, wrapped or not."""
    orig = pymysql.err.IntegrityError(1062, "Duplicate entry 't0001' for key 'name'")
    error = wrapped(orig)
    assert isinstance(error, sa_exc.IntegrityError)
    assert mysql.classify(error) == Classification(PERMANENT, 1062)
    assert mysql.classify(orig) == Classification(PERMANENT, 1062)


@pytest.mark.parametrize(
    ("orig", "cls"),
    [
        (pymysql.err.ProgrammingError(1064, "You have an error in your SQL syntax"), None),
        (pymysql.err.ProgrammingError(1146, "Table 'app.tasks' doesn't exist"), None),
        (pymysql.err.DataError(1406, "Data too long for column 'name'"), None),
    ],
)
def test_programming_and_data_errors_are_permanent(orig: Exception, cls: Any) -> None:
    """Syntax, schema and data errors are permanent."""
    assert mysql.classify(wrapped(orig, cls)).kind is PERMANENT


def test_access_denied_is_permanent() -> None:
    """A wrong password (1045) is never retried, even though it is an OperationalError."""
    orig = OPERATIONAL(1045, "Access denied for user 'app'@'10.0.0.2' (using password: YES)")
    assert mysql.classify(wrapped(orig)).kind is PERMANENT


def test_known_errno_wins_over_a_permanent_class() -> None:
    """The errno decides, whatever driver class carries it (here InternalError)."""
    orig = pymysql.err.InternalError(1213, "Deadlock found when trying to get lock")
    assert mysql.classify(wrapped(orig)).kind is ErrorKind.DEADLOCK


def test_unknown_errno_is_permanent_unless_sqlalchemy_invalidated() -> None:
    """Unknown errnos are permanent; SQLAlchemy's own disconnect verdict is trusted on top."""
    orig = OPERATIONAL(2027, "Malformed packet")
    assert mysql.classify(wrapped(orig)) == Classification(PERMANENT, 2027)
    assert mysql.classify(wrapped(orig, invalidated=True)) == Classification(
        ErrorKind.DISCONNECT, 2027
    )


def test_integrity_error_stays_permanent_even_if_invalidated() -> None:
    """A permanent class is not turned into a retry by an invalidated connection."""
    orig = pymysql.err.IntegrityError(1062, "Duplicate entry")
    assert mysql.classify(wrapped(orig, invalidated=True)).kind is PERMANENT


def test_interface_error_on_a_closed_socket_is_a_disconnect() -> None:
    """PyMySQL's InterfaceError(0, '') (socket already closed) is a disconnect, wrapped or not."""
    orig = pymysql.err.InterfaceError(0, "")
    assert mysql.classify(orig) == Classification(ErrorKind.DISCONNECT, 0)
    error = wrapped(orig)
    assert isinstance(error, sa_exc.InterfaceError)
    assert mysql.classify(error) == Classification(ErrorKind.DISCONNECT, 0)


def test_driver_error_without_errno() -> None:
    """A driver error with only a message has no errno and is permanent."""
    assert mysql.classify(pymysql.err.InterfaceError("bad")) == Classification(PERMANENT)
    assert mysql.errno_of(pymysql.err.InterfaceError("bad")) is None


@pytest.mark.parametrize(
    "error",
    [
        ValueError("boom"),
        RuntimeError(),
        ZeroDivisionError("division by zero"),
        TypeError("unsupported operand"),
        OSError("disk full"),
    ],
)
def test_non_database_exception_is_permanent(error: Exception) -> None:
    """An application error is permanent and has no errno."""
    assert mysql.classify(error) == Classification(PERMANENT)


def test_boolean_first_argument_is_not_an_errno() -> None:
    """True/False as first argument is not mistaken for errno 1/0."""
    assert mysql.errno_of(pymysql.err.OperationalError(False, "x")) is None


@pytest.mark.parametrize(
    "error", [KeyError(2013), KeyError(1213), ValueError(0, "x"), IndexError(2006)]
)
def test_non_database_exception_with_an_int_argument_is_permanent(error: Exception) -> None:
    """An application error whose first argument happens to be a known errno stays permanent."""
    assert mysql.classify(error).kind is PERMANENT


def test_errno_of_reads_the_original_of_a_wrapped_error() -> None:
    """errno_of() looks through SQLAlchemy's wrapper to the driver's args."""
    assert mysql.errno_of(wrapped(OPERATIONAL(1205, "Lock wait timeout"))) == 1205
    assert mysql.errno_of(OPERATIONAL(2006, "gone")) == 2006


# --- classify_generic ----------------------------------------------------------------------


def test_generic_invalidated_connection_is_a_disconnect() -> None:
    """classify_generic: SQLAlchemy's connection_invalidated means disconnect."""
    error = wrapped(OPERATIONAL(2006, "gone"), invalidated=True)
    assert classify_generic(error) == Classification(ErrorKind.DISCONNECT)


@pytest.mark.parametrize(
    "error",
    [
        wrapped(OPERATIONAL(2006, "gone")),
        wrapped(pymysql.err.IntegrityError(1062, "dup")),
        OPERATIONAL(2013, "raw, never seen by SQLAlchemy"),
        ValueError("x"),
    ],
)
def test_generic_everything_else_is_permanent(error: Exception) -> None:
    """classify_generic: anything SQLAlchemy did not invalidate is permanent."""
    assert classify_generic(error) == Classification(PERMANENT)
