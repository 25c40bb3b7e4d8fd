"""What MySQL and MariaDB errors mean for a retried operation, whatever the driver.

Classification follows the error number, because the same exception class covers
both "server gone" and "access denied", and the drivers disagree on classes (the
same lost connection is an ``OperationalError`` with PyMySQL and an
``InterfaceError`` with MariaDB Connector/Python). The number is read from the
driver's error: its ``errno`` attribute (mysql-connector-python, MariaDB
Connector/Python) or its first argument (PyMySQL, mysqlclient, aiomysql, asyncmy).
SQLAlchemy's own disconnect detection (``DBAPIError.connection_invalidated``) is
trusted on top. Anything unknown is permanent: retrying an error nobody understood
is how duplicates happen.
"""

from __future__ import annotations

import sys
from types import MappingProxyType
from typing import TYPE_CHECKING

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, ProgrammingError

from uow import Classification, ErrorKind

if TYPE_CHECKING:
    from collections.abc import Mapping

ERRNO_KINDS: Mapping[int, ErrorKind] = MappingProxyType(
    {
        # The connection is gone; the server rolled the transaction back.
        2006: ErrorKind.DISCONNECT,  # server has gone away (idle past wait_timeout)
        2013: ErrorKind.DISCONNECT,  # lost connection during query (KILL, crash, restart)
        2014: ErrorKind.DISCONNECT,  # commands out of sync: the protocol state is lost
        2045: ErrorKind.DISCONNECT,  # can't open shared memory; no answer from server
        2055: ErrorKind.DISCONNECT,  # lost connection at a system error
        4031: ErrorKind.DISCONNECT,  # disconnected by the server for inactivity
        1927: ErrorKind.DISCONNECT,  # MariaDB: connection was killed
        5013: ErrorKind.DISCONNECT,  # MariaDB Connector/C: read error (reset by peer, ...)
        5014: ErrorKind.DISCONNECT,  # MariaDB Connector/C: write error on a closed socket
        # The server cannot be reached or takes no more connections.
        2002: ErrorKind.UNAVAILABLE,  # can't connect through the socket (MariaDB C: on host)
        2003: ErrorKind.UNAVAILABLE,  # can't connect to server on host
        1040: ErrorKind.UNAVAILABLE,  # too many connections
        1203: ErrorKind.UNAVAILABLE,  # user has more than max_user_connections
        # The server broke a deadlock by rolling this transaction back.
        1213: ErrorKind.DEADLOCK,
        # A lock wait timed out; only the statement was undone.
        1205: ErrorKind.LOCK_WAIT,
        3572: ErrorKind.LOCK_WAIT,  # NOWAIT: the row is locked
        # The connection points at a server that cannot take this transaction now.
        1290: ErrorKind.FAILOVER,  # running with --read-only
        1792: ErrorKind.FAILOVER,  # cannot execute statement in a READ ONLY transaction
        1836: ErrorKind.FAILOVER,  # running in read-only mode
        1047: ErrorKind.FAILOVER,  # Galera: node not ready / not in the Primary component
        1180: ErrorKind.FAILOVER,  # Galera: COMMIT failed while losing the Primary component
        1053: ErrorKind.FAILOVER,  # server shutdown in progress
        # The statement was interrupted: it may still run, or be the problem itself.
        1317: ErrorKind.INTERRUPTED,  # query execution was interrupted (KILL QUERY)
        3024: ErrorKind.INTERRUPTED,  # maximum statement execution time exceeded
    }
)
"""MySQL/MariaDB error numbers and their kinds; every other errno is permanent."""

NOT_AVAILABLE = -1
"""mysql-connector-python's own errno for "MySQL Connection not available": its cursor
pings first, so every lost connection (idle timeout, KILL, restart) surfaces so."""

CLIENT_TIMEOUT = 3024
"""MySQL's "maximum statement execution time exceeded", a server error (interrupted), and
also the number mysql-connector-python gives its own read and connect timeouts, after
which it has closed the connection (a lost connection, like PyMySQL's 2013)."""

_PERMANENT_CLASSES = (IntegrityError, ProgrammingError, DataError)
KIND_ATTRIBUTE = "__retrying_uow_kind__"
"""Attribute of an error holding a kind the adapter already knows (a read timeout it set)."""
CAUSE_ATTRIBUTE = "__retrying_uow_cause__"
"""Attribute of an error holding the likely cause named by the transaction guard."""


def driver_error(error: BaseException) -> BaseException | None:
    """Return the driver's exception behind ``error``, or ``None`` for any other error.

    SQLAlchemy wraps driver errors (``DBAPIError.orig``). A bare exception counts only
    if it belongs to a PEP 249 driver (its package defines ``paramstyle`` and an
    ``Error`` class it derives from): ``KeyError(2013)`` is a bug, not a lost connection.
    """
    if isinstance(error, DBAPIError):
        return error.orig
    module = type(error).__module__
    while module:
        found = sys.modules.get(module)
        base = getattr(found, "Error", None)
        if hasattr(found, "paramstyle") and isinstance(base, type) and isinstance(error, base):
            return error
        module = module.rpartition(".")[0]
    return None


def errno_of(error: BaseException) -> int | None:
    """Return the server or client error number of a DBAPI or driver error, if any."""
    original = driver_error(error)
    if original is None:
        return None
    errno = getattr(original, "errno", None)
    if isinstance(errno, int) and not isinstance(errno, bool):
        return errno
    args: tuple[object, ...] = getattr(original, "args", ())
    if args and isinstance(args[0], int) and not isinstance(args[0], bool):
        return args[0]
    return None


def classify(error: BaseException) -> Classification:
    """Say what a MySQL/MariaDB error means for the operation (see ``ERRNO_KINDS``)."""
    errno = errno_of(error)
    cause = getattr(error, CAUSE_ATTRIBUTE, None)
    known = getattr(error, KIND_ATTRIBUTE, None)
    if isinstance(known, ErrorKind):
        return Classification(known, errno, cause)
    inner = _raised_from(error, errno)
    if inner is not None:
        found = classify(inner)
        if found.kind is not ErrorKind.PERMANENT:
            return Classification(found.kind, found.errno, cause or found.cause)
    kind = _kind(error, errno)
    return Classification(kind, errno, None if kind is ErrorKind.PERMANENT else cause)


def _kind(error: BaseException, errno: int | None) -> ErrorKind:
    if errno == CLIENT_TIMEOUT and not _from_server(driver_error(error)):
        return ErrorKind.DISCONNECT
    kind = ERRNO_KINDS.get(errno) if errno is not None else None
    if kind is not None:
        return kind
    if isinstance(error, _PERMANENT_CLASSES):
        return ErrorKind.PERMANENT
    if _lost(error, errno):
        return ErrorKind.DISCONNECT
    return ErrorKind.PERMANENT


def _from_server(original: BaseException | None) -> bool:
    """Tell a server's error from one the driver raised itself.

    PEP 249 puts every error reported by the database under ``DatabaseError``; the
    drivers' own timeouts (mysql-connector-python's ``ReadTimeoutError`` and
    ``ConnectionTimeoutError``) derive from ``Error`` alone.
    """
    return original is not None and any(
        cls.__name__ == "DatabaseError" for cls in type(original).__mro__
    )


def _raised_from(error: BaseException, errno: int | None) -> BaseException | None:
    """Return the driver error a driver error without an errno of its own was raised from.

    mysql-connector-python turns whatever fails while it prepares a statement's parameters
    into ``ProgrammingError("Failed processing pyformat-parameters; ...")`` (errno -1)
    raised from the original error; on a new connection that includes a lost connection
    (its first parameters need the session's ``sql_mode``, one more round trip). The
    original error says what happened.
    """
    if errno not in (None, NOT_AVAILABLE):
        return None
    original = driver_error(error)
    inner = None if original is None else original.__cause__
    if inner is None or inner is original or driver_error(inner) is None:
        return None
    return inner


def _lost(error: BaseException, errno: int | None) -> bool:
    """Tell a lost connection that has no errno of its own in the table."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    if errno == 0:  # PyMySQL's InterfaceError(0, ''): the socket is already closed
        return True
    return errno == NOT_AVAILABLE and "not available" in str(driver_error(error))
