"""What PostgreSQL errors mean for a retried operation: the SQLSTATE decides, whatever the driver.

Exception classes are no guide: through SQLAlchemy, asyncpg's serialization failures,
deadlocks, lock timeouts and read-only errors all arrive as a plain ``DBAPIError``,
and psycopg files the idle-in-transaction timeout and the read-only error under
``InternalError``. The SQLSTATE is what both agree on: psycopg's ``exc.orig.sqlstate``,
the asyncpg adapter's ``exc.orig.sqlstate`` (psycopg2's ``pgcode``). Where an error
has one, it alone decides (`SQLSTATE_KINDS`; any other SQLSTATE is permanent).

Four failures come without a SQLSTATE, and are told apart without reading messages,
except for the one case where the text is all there is:

- a connection lost without an error from the server (an immediate shutdown, a crash
  of another backend, a cut network, a lost COMMIT with psycopg, asyncpg's "connection
  is closed" after a FATAL it read in the background): SQLAlchemy's own disconnect
  detection (``connection_invalidated``) is trusted;
- a driver's ``OperationalError`` without a SQLSTATE on an open connection: every
  error the server sends has one, so this is the driver's own I/O failure (psycopg's
  "connection socket closed" when the socket was reset, which SQLAlchemy does not
  detect); a disconnect too;
- a failure to connect with asyncpg: a raw ``OSError`` (refused) or ``TimeoutError``
  (its ``timeout``), not wrapped by SQLAlchemy; it counts only when it was raised
  while SQLAlchemy was opening a connection (its traceback says so);
- a failure to connect with psycopg: libpq turns the server's startup error into text
  and psycopg raises it with ``sqlstate`` ``None``, so "the server is starting up"
  (57P03) and "wrong password" (28P01) differ only in their words. For these, and
  only these, `CONNECT_TEXTS` lists the transient cases; any other failure to
  connect (wrong password, unknown database, ...) is permanent.
"""

from __future__ import annotations

import asyncio
from types import MappingProxyType
from typing import TYPE_CHECKING

from sqlalchemy.engine.default import DefaultDialect
from sqlalchemy.exc import DBAPIError, OperationalError

from adapters.sqlalchemy._listeners import CAUSE_ATTRIBUTE, KIND_ATTRIBUTE
from uow import Classification, ErrorKind

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from types import CodeType

SQLSTATE_KINDS: Mapping[str, ErrorKind] = MappingProxyType(
    {
        # The server rolled the transaction back to let others go on: rerun it.
        "40001": ErrorKind.DEADLOCK,  # serialization_failure (SERIALIZABLE, REPEATABLE READ)
        "40P01": ErrorKind.DEADLOCK,  # deadlock_detected
        # A lock wait gave up (lock_timeout, NOWAIT); PostgreSQL aborted the transaction.
        "55P03": ErrorKind.LOCK_WAIT,  # lock_not_available
        # The server ended the session: the transaction is gone, rerun on a new one.
        "57P01": ErrorKind.DISCONNECT,  # admin_shutdown (pg_terminate_backend, fast stop)
        "57P02": ErrorKind.DISCONNECT,  # crash_shutdown
        "57P05": ErrorKind.DISCONNECT,  # idle_session_timeout (a pooled connection)
        "25P03": ErrorKind.DISCONNECT,  # idle_in_transaction_session_timeout
        # Raised by COMMIT, these leave its outcome unknown (a disconnect at COMMIT is);
        # raised by any other statement, the transaction is aborted and a rerun is safe.
        "40003": ErrorKind.DISCONNECT,  # statement_completion_unknown
        "08007": ErrorKind.DISCONNECT,  # transaction_resolution_unknown
        # The server cannot take a connection now: back off and rerun.
        "57P03": ErrorKind.UNAVAILABLE,  # cannot_connect_now (starting up, recovering)
        "53300": ErrorKind.UNAVAILABLE,  # too_many_connections
        "08001": ErrorKind.UNAVAILABLE,  # sqlclient_unable_to_establish_sqlconnection
        "08004": ErrorKind.UNAVAILABLE,  # sqlserver_rejected_establishment_of_sqlconnection
        # A standby, or a server made read-only: the connection points at the wrong node.
        "25006": ErrorKind.FAILOVER,  # read_only_sql_transaction
        # The statement was cancelled (statement_timeout, pg_cancel_backend): not retried.
        "57014": ErrorKind.INTERRUPTED,  # query_canceled
        # Retrying cannot help; listed because they arrive where the transient ones do.
        "28P01": ErrorKind.PERMANENT,  # invalid_password
        "3D000": ErrorKind.PERMANENT,  # invalid_catalog_name (no such database)
    }
)
"""SQLSTATEs and their kinds; the rest of class 08 is a disconnect, anything else permanent."""

_CLASS_KINDS = MappingProxyType({"08": ErrorKind.DISCONNECT})  # connection_exception
# (08003 is asyncpg's "connection was closed in the middle of operation".)

CONNECT_TEXTS = (
    # 57P03: the postmaster takes no connection yet (measured during pg_ctl start and
    # crash recovery), or no more (pg_ctl stop in progress: the same SQLSTATE's fourth text).
    "the database system is starting up",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "the database system is shutting down",
    # 53300: max_connections (less the reserved slots) or the role's CONNECTION LIMIT.
    "remaining connection slots are reserved",
    "too many connections for role",
    # No server answered: it is down, or went away in the handshake (crash recovery).
    "Connection refused",
    "server closed the connection unexpectedly",
    # psycopg's own ConnectionTimeout, as listed in a multi-host failure.
    "connection timeout expired",
    # libpq's target_session_attrs (read-write, primary) found no writable server: every
    # host is a standby or read-only, as during a failover before the promotion.
    "session is read-only",
    "server is in hot standby mode",
)
"""What a psycopg failure to connect says when it is transient (its SQLSTATE is lost).

psycopg joins the failures of a multi-host connection string into one message, so a
text anywhere in it counts: a primary refusing connections next to a standby that is
not writable is a failover in progress. The server's texts follow its ``lc_messages``
(English here); under another language these cases are permanent.
"""

_DRIVER_PACKAGES = frozenset({"psycopg", "psycopg2", "asyncpg"})
_CONNECT_CODE: CodeType = DefaultDialect.connect.__code__
_DO_CONNECT = ("sqlalchemy.engine.create", "connect")
"""Where create_engine's pool runs the ``do_connect`` listeners, then the dialect's connect."""


def driver_error(error: BaseException) -> BaseException | None:
    """Return the driver's exception behind ``error``, or ``None`` for any other error.

    SQLAlchemy wraps driver errors (``DBAPIError.orig``); a bare exception counts when
    its class belongs to a PostgreSQL driver or to SQLAlchemy's asyncpg adaptation.
    """
    if isinstance(error, DBAPIError):
        return error.orig
    module = type(error).__module__
    if module.split(".")[0] in _DRIVER_PACKAGES or module.startswith(
        "sqlalchemy.dialects.postgresql"
    ):
        return error
    return None


def sqlstate_of(error: BaseException) -> str | None:
    """Return the SQLSTATE of a PostgreSQL error (``None`` when the driver has none)."""
    original = driver_error(error)
    if original is None:
        return None
    for name in ("sqlstate", "pgcode"):
        value = getattr(original, name, None)
        if isinstance(value, str) and len(value) == 5:  # noqa: PLR2004 -- SQLSTATEs have 5
            return value
    return None


def kind_of_sqlstate(sqlstate: str) -> ErrorKind:
    """Return the kind of a SQLSTATE (see `SQLSTATE_KINDS`)."""
    kind = SQLSTATE_KINDS.get(sqlstate)
    if kind is None:
        kind = _CLASS_KINDS.get(sqlstate[:2], ErrorKind.PERMANENT)
    return kind


def classify(error: BaseException) -> Classification:
    """Say what a PostgreSQL error means for the operation (see the module's rules)."""
    cause = getattr(error, CAUSE_ATTRIBUTE, None)
    known = getattr(error, KIND_ATTRIBUTE, None)
    if isinstance(known, ErrorKind):
        return Classification(known, None, cause)
    sqlstate = sqlstate_of(error)
    if sqlstate is not None:
        kind = kind_of_sqlstate(sqlstate)
        return Classification(kind, None, cause if kind is not ErrorKind.PERMANENT else None)
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return Classification(ErrorKind.DISCONNECT, None, cause)
    kind = _without_sqlstate(error)
    return Classification(kind, None, cause if kind is not ErrorKind.PERMANENT else None)


def _without_sqlstate(error: BaseException) -> ErrorKind:
    """Classify an error that has no SQLSTATE and that SQLAlchemy did not call a disconnect."""
    original = driver_error(error)
    if original is not None:
        if _raised_while_connecting(error):
            transient = type(original).__name__ == "ConnectionTimeout" or any(
                fragment in str(original) for fragment in CONNECT_TEXTS
            )
            return ErrorKind.UNAVAILABLE if transient else ErrorKind.PERMANENT
        if _operational(error, original):
            # Every error of the server has a SQLSTATE: a driver's OperationalError without
            # one is its own I/O failure on the connection (psycopg's "connection socket
            # closed" after a reset, for one), so the connection is gone.
            return ErrorKind.DISCONNECT
        return ErrorKind.PERMANENT
    if isinstance(error, (OSError, asyncio.TimeoutError)):
        if _raised_while_connecting(error):
            return ErrorKind.UNAVAILABLE  # asyncpg: refused, unreachable or timed out
        if isinstance(error, (TimeoutError, asyncio.TimeoutError)) and _raised_in(error, "asyncpg"):
            return ErrorKind.INTERRUPTED  # its command_timeout: the statement may still run
    return ErrorKind.PERMANENT


def _operational(error: BaseException, original: BaseException) -> bool:
    if isinstance(error, OperationalError):
        return True
    return any(cls.__name__ == "OperationalError" for cls in type(original).__mro__)


def _frames(error: BaseException) -> Iterator[tuple[CodeType, str]]:
    """Yield the code and module of every frame between where ``error`` was raised and here."""
    traceback = error.__traceback__
    while traceback is not None:
        frame = traceback.tb_frame
        yield frame.f_code, str(frame.f_globals.get("__name__", ""))
        traceback = traceback.tb_next


def _raised_while_connecting(error: BaseException) -> bool:
    """Tell whether the error came out of opening a new DBAPI connection.

    That is the dialect's ``connect`` or a ``do_connect`` listener, not what runs on the
    connection once it is open (the dialect's first-connect queries, ``connect`` events).
    """
    return any(
        code is _CONNECT_CODE or (module, code.co_name) == _DO_CONNECT
        for code, module in _frames(error)
    )


def _raised_in(error: BaseException, package: str) -> bool:
    return any(module.split(".")[0] == package for _code, module in _frames(error))
