"""Fault injection for the SQLAlchemy adapter: the driver's own errors, where it raises them.

:func:`uow.testing.inject` describes faults whatever the database; this module makes
SQLAlchemy engines honour them, so that a test sees what production would:

- Statements are counted per attempt (attempt sessions only: ``Session.info`` holds
  ``adapters.pooling.ATTEMPT``) in the dialect's ``do_execute``, ``do_execute_no_params``
  and ``do_executemany`` events. The fault is raised there, before the N-th statement is
  sent, so SQLAlchemy's own error handling wraps it (``sqlalchemy.exc.OperationalError``
  with ``.orig``), runs ``handle_error`` listeners, recognises a disconnect and
  invalidates the connection, exactly as for a real one.
- COMMIT: SQLAlchemy has no event inside its commit error handling, so an armed engine's
  dialect gets a ``do_commit`` that raises there. A lost COMMIT that was applied commits
  first, then raises; one that was not raises before committing (and the invalidated
  connection takes the open transaction with it).

What is raised, as the engine's DBAPI module defines it:

- disconnect: MySQL/MariaDB ``OperationalError(2013, 'Lost connection to MySQL server during
  query')`` (or the fault's errno, e.g. 2006); SQLite ``ProgrammingError('Cannot operate on a
  closed database.')``, which its dialect treats as a disconnect.
- deadlock ``OperationalError(1213, ...)``, lock wait ``OperationalError(1205, ...)``,
  failover ``OperationalError(1290, ...)``, interrupted ``OperationalError(1317, ...)``:
  MySQL/MariaDB only, with the server's message (``MYSQL_MESSAGES``).

SQLite has no error numbers that the generic classification would retry, so only a lost
connection is simulated there; other kinds raise :class:`NotImplementedError` when they
strike. Engines are armed by :class:`~adapters.sqlalchemy.SqlAlchemyBackend` when an
attempt begins inside an ``inject()`` block; outside one, nothing is installed.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from sqlalchemy import event

from adapters.pooling import ATTEMPT
from uow import ErrorKind
from uow.testing import injected_fault, injecting

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from sqlalchemy.engine import Connection, Dialect, Engine, ExecutionContext
    from sqlalchemy.orm import Session, SessionTransaction, sessionmaker
    from sqlalchemy.pool import PoolProxiedConnection

    from uow import AttemptInfo
    from uow.testing import Fault

__all__ = ["MYSQL_MESSAGES", "arm", "driver_error"]

MYSQL_MESSAGES: Mapping[int, str] = MappingProxyType(
    {
        2006: "MySQL server has gone away",
        2013: "Lost connection to MySQL server during query",
        1213: "Deadlock found when trying to get lock; try restarting transaction",
        1205: "Lock wait timeout exceeded; try restarting transaction",
        1290: (
            "The MariaDB server is running with the --read-only option "
            "so it cannot execute this statement"
        ),
        1317: "Query execution was interrupted",
    }
)
"""The server's (or client's) message for the error numbers faults use by default."""

_DEFAULT_ERRNO = MappingProxyType(
    {
        ErrorKind.DISCONNECT: 2013,
        ErrorKind.DEADLOCK: 1213,
        ErrorKind.LOCK_WAIT: 1205,
        ErrorKind.FAILOVER: 1290,
        ErrorKind.INTERRUPTED: 1317,
    }
)
_SQLITE_CLOSED = "Cannot operate on a closed database."  # what its dialect calls a disconnect
_ARMED = "retrying_uow_faults"  # Connection.info key: the attempt's statement counter
_COMMIT_WRAPPED = "__retrying_uow_faults__"
_armed: weakref.WeakSet[object] = weakref.WeakSet()  # engines and sessionmakers
_arming = threading.Lock()


@dataclass
class _Counter:
    """The statements one attempt sent so far on its connection."""

    attempt: AttemptInfo
    statements: int = 0


def arm(engine: Engine, sessions: sessionmaker[Session]) -> None:
    """Make an engine and its attempt sessions honour ``uow.testing.inject`` (idempotent).

    :class:`~adapters.sqlalchemy.SqlAlchemyBackend` calls it when an attempt begins inside
    an ``inject()`` block, so an engine never used that way carries none of it.
    """
    # Not event.contains(): for a sessionmaker it answers by id() of the class it made,
    # and a new sessionmaker's class may reuse a collected one's id (then it says "yes"
    # for a listener that was never added).
    with _arming:
        if engine not in _armed:
            for name, listener in (
                ("do_execute", _before_statement),
                ("do_executemany", _before_statement),
                ("do_execute_no_params", _before_statement_no_params),
            ):
                event.listen(engine, name, listener)
            event.listen(engine.pool, "checkin", _forget)
            dialect = engine.dialect
            if not getattr(dialect.do_commit, _COMMIT_WRAPPED, False):
                dialect.do_commit = _commit_with_faults(dialect, dialect.do_commit)  # type: ignore[method-assign, assignment]
            _armed.add(engine)
        if sessions not in _armed:
            event.listen(sessions, "after_begin", _count_attempt)
            _armed.add(sessions)


def driver_error(dialect: Dialect, fault: Fault) -> Exception:
    """Return the exception the dialect's driver raises for ``fault`` (not yet wrapped)."""
    dbapi: Any = dialect.loaded_dbapi
    if dialect.name in {"mysql", "mariadb"}:
        errno = fault.errno if fault.errno is not None else _DEFAULT_ERRNO.get(fault.kind)
        if errno is not None:
            message = MYSQL_MESSAGES.get(errno, f"simulated {fault.kind.value} ({errno})")
            error: Exception = dbapi.OperationalError(errno, message)
            return error
    elif dialect.name == "sqlite" and fault.kind is ErrorKind.DISCONNECT:
        closed: Exception = dbapi.ProgrammingError(_SQLITE_CLOSED)
        return closed
    msg = (
        f"{fault} cannot be simulated on {dialect.name}: MySQL/MariaDB simulate a lost "
        "connection, deadlock, lock wait, failover or interruption, SQLite a lost connection"
    )
    raise NotImplementedError(msg)


def _count_attempt(
    session: Session, _transaction: SessionTransaction, connection: Connection
) -> None:
    attempt = session.info.get(ATTEMPT)
    if attempt is not None and injecting():
        connection.info[_ARMED] = _Counter(attempt)
    else:
        connection.info.pop(_ARMED, None)


def _forget(_dbapi_connection: object, record: Any) -> None:
    record.info.pop(_ARMED, None)


def _counter(connection: Connection | PoolProxiedConnection) -> _Counter | None:
    """Return the attempt counter of a connection, if it belongs to an attempt."""
    try:
        counter: _Counter | None = connection.info.get(_ARMED)
    except NotImplementedError:  # the dialect's first-connect setup on an ad-hoc connection
        return None
    return counter


def _strike(context: ExecutionContext) -> None:
    counter = _counter(context.root_connection) if injecting() else None
    if counter is None:
        return  # not an attempt's connection
    counter.statements += 1
    fault = injected_fault(counter.attempt, counter.statements)
    if fault is not None:
        raise driver_error(context.dialect, fault)


def _before_statement(
    _cursor: object, _statement: str, _parameters: object, context: ExecutionContext
) -> bool:
    _strike(context)
    return False  # not handled: the statement runs as usual


def _before_statement_no_params(
    _cursor: object, _statement: str, context: ExecutionContext
) -> bool:
    _strike(context)
    return False


def _commit_with_faults(dialect: Dialect, original: Callable[[Any], None]) -> Callable[[Any], None]:
    """Wrap ``dialect.do_commit``: raising there goes through SQLAlchemy's error handling."""

    def do_commit(connection: Any) -> None:
        counter = _counter(connection) if injecting() else None
        fault = None if counter is None else injected_fault(counter.attempt, "commit")
        if fault is None:
            original(connection)
            return
        if fault.committed:
            original(connection)  # applied; only the reply is "lost"
        raise driver_error(dialect, fault)

    setattr(do_commit, _COMMIT_WRAPPED, True)
    return do_commit
