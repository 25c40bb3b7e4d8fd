"""A lost COMMIT, settled the PostgreSQL way: ask the server what became of the transaction.

A COMMIT whose reply never came may have been applied or not, and the client cannot
tell the two apart (the same error either way). PostgreSQL can: every transaction
that writes gets an id, and ``pg_xact_status(id)`` says ``committed``, ``aborted`` or
``in progress``. Turned on per engine with `settle_lost_commits`:

- just before the runner's COMMIT of a transaction that wrote, one round trip reads
  ``pg_current_xact_id_if_assigned()`` (``NULL``: nothing was written after all, so a
  lost COMMIT loses nothing and the operation is rerun);
- after a lost COMMIT, a new connection asks ``pg_xact_status``. ``in progress``
  means the old backend still holds the transaction (its client is gone, but a COMMIT
  may still reach it): ``pg_terminate_backend(pid, timeout)`` ends that backend (only
  the one holding this very transaction, by ``pg_stat_activity.backend_xid``) and
  waits for it to exit, and the status is read again. ``NULL`` (an id too old for the
  commit log) or a backend that would not end in time leave the outcome unknown.
- On another server instance than the original (a restarted server, a promoted
  standby) a transaction whose WAL was lost may see its id handed out again, so there
  only ``aborted``, or an id "in the future" (22023), count: the transaction did not
  commit there. ``committed`` or ``in progress`` could be another transaction's: the
  outcome stays unknown. A standby (in recovery) is never asked.

No marker table, no write: the cost is that one round trip per writing transaction.

Commit markers work on PostgreSQL too. Their lookup reads the marker without waiting
for the original transaction (its row is invisible, not locked, under MVCC), so the
original backend is ended first here as well (`settle`): by its pid, on the same
server instance, if it started before the attempt did.
"""

from __future__ import annotations

import math
import time
import weakref
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from adapters.postgresql._drivers import bound_socket
from adapters.postgresql._errors import classify, sqlstate_of
from adapters.sqlalchemy._listeners import MIN_READ_TIMEOUT, connect_deadline, pause
from adapters.sqlalchemy._strict import own
from uow import ErrorKind

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Connection, Dialect, Engine
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.orm import Session

    from adapters.sqlalchemy._databases import AttemptState

FACTS = (
    "SELECT pg_backend_pid(), inet_server_addr()::text, inet_server_port(), "
    "(extract(epoch FROM pg_postmaster_start_time()) * 1000000)::bigint"
)
"""What identifies a connection's backend: its pid and the server instance it runs in."""
TRANSACTION_ID = "SELECT pg_current_xact_id_if_assigned()::text"
_INSTANCE = text(
    "SELECT inet_server_addr()::text, inet_server_port(), "
    "(extract(epoch FROM pg_postmaster_start_time()) * 1000000)::bigint, pg_is_in_recovery()"
)
_STATUS = text("SELECT pg_xact_status(CAST(CAST(:xid AS text) AS xid8))")
_END_HOLDER = text(
    "SELECT pg_terminate_backend(pid, :ms) FROM pg_stat_activity "
    "WHERE pid = :pid AND backend_xid::text = :xid32"
)
_END_ORIGIN = text(
    "SELECT pg_terminate_backend(pid, :ms) FROM pg_stat_activity "
    "WHERE pid = :pid AND backend_start <= now() - make_interval(secs => :age)"
)
_FUTURE = "22023"  # invalid_parameter_value: "transaction ID ... is in the future"
_IDLE_TIMEOUT = "25P03"
_START_SLACK = 0.5
"""Seconds: a backend counts as the original if it started at most this long after the attempt
(the server's and the client's views of "when" differ by a network delay). A pid is reused
only after its backend exited, which is after the COMMIT was sent."""
_RETRYABLE = frozenset(
    {
        ErrorKind.DISCONNECT,
        ErrorKind.UNAVAILABLE,
        ErrorKind.FAILOVER,
        ErrorKind.LOCK_WAIT,
        ErrorKind.INTERRUPTED,
    }
)
_PAUSE = 0.05
_XID_WRAP = 2**32

_settling: weakref.WeakSet[Dialect] = weakref.WeakSet()


def settle_lost_commits(engine: Engine | AsyncEngine) -> None:
    """Settle lost COMMITs on ``engine`` by transaction id (``pg_xact_status``), no marker table.

    Costs one round trip per transaction that writes (reads pay nothing). With commit
    markers on as well, the markers decide and the round trip is wasted: use one or the
    other. Works for every runner on the engine, sync or async (give the AsyncEngine).
    """
    sync: Any = getattr(engine, "sync_engine", engine)
    if sync.dialect.name != "postgresql":
        msg = f"settle_lost_commits() needs a PostgreSQL engine, not {sync.dialect.name}"
        raise ValueError(msg)
    _settling.add(sync.dialect)


def settling(dialect: Dialect) -> bool:
    """Tell whether lost COMMITs on this dialect's engines are settled by transaction id."""
    return dialect in _settling


def instance(address: object, port: object, started: object) -> str:
    """Name a server instance: where it listens, and when its postmaster started (microseconds)."""
    return f"{address}:{port}/{started}"


def read_transaction_id(session: Session, state: AttemptState) -> None:
    """Before COMMIT: remember the transaction's id (``None``: it wrote nothing after all)."""
    value = session.connection().exec_driver_sql(TRANSACTION_ID).scalar()
    state.transaction_id = None if value is None else str(value)


def outcome(engine: Engine, state: AttemptState, seconds: float) -> bool | None:
    """After a lost COMMIT: whether it was applied, ``None`` when the server cannot tell."""
    if any(sqlstate_of(error) == _IDLE_TIMEOUT for error in state.errors):
        # The server ended the session while it sat idle, before it read the COMMIT.
        return False
    if not settling(engine.dialect):
        return None
    xid = state.transaction_id
    if xid is None:
        return False  # the transaction wrote nothing: a rerun cannot write twice
    origin = state.connection
    if origin is None or origin.server_id is None or origin.node is None:
        return None
    node, pid = origin.node, origin.server_id
    deadline = time.monotonic() + max(seconds, MIN_READ_TIMEOUT)

    def ask(connection: Connection) -> bool | None:
        return _status(connection, str(xid), node, pid, deadline)

    return _retrying(engine, deadline, ask)


def settle(connection: Connection, state: AttemptState, seconds: float) -> None:
    """Before a marker lookup: end the original backend if it is still there; bound the read."""
    origin = state.connection
    if (
        origin is not None
        and origin.server_id is not None
        and _same_instance(connection, origin.node)
    ):
        age = max(time.monotonic() - state.began - _START_SLACK, 0.0)
        ended = connection.execute(
            _END_ORIGIN, {"ms": _milliseconds(seconds), "pid": origin.server_id, "age": age}
        ).scalars()
        if not all(ended):
            msg = "the original transaction's backend did not end in time: its outcome is unknown"
            raise RuntimeError(msg)
    connection.exec_driver_sql(f"SET lock_timeout = {_milliseconds(seconds)}")


def _status(connection: Connection, xid: str, node: str, pid: int, deadline: float) -> bool | None:
    row = connection.execute(_INSTANCE).one()
    if row[3]:
        return None  # a standby: it may not have replayed the transaction yet
    same = instance(row[0], row[1], row[2]) == node
    try:
        status = connection.execute(_STATUS, {"xid": xid}).scalar()
    except DBAPIError as error:
        if sqlstate_of(error) == _FUTURE and not same:
            return False  # lost with the old instance's WAL: it never committed here
        raise
    if not same:
        return False if status == "aborted" else None
    if status == "in progress":
        ms = _milliseconds(max(deadline - time.monotonic(), MIN_READ_TIMEOUT))
        xid32 = str(int(xid) % _XID_WRAP)
        connection.execute(_END_HOLDER, {"ms": ms, "pid": pid, "xid32": xid32}).all()
        status = connection.execute(_STATUS, {"xid": xid}).scalar()
    return {"committed": True, "aborted": False}.get(str(status))


def _same_instance(connection: Connection, node: str | None) -> bool:
    row = connection.execute(_INSTANCE).one()
    return node is not None and instance(row[0], row[1], row[2]) == node


def _milliseconds(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _retrying(
    engine: Engine, deadline: float, ask: Callable[[Connection], bool | None]
) -> bool | None:
    """Run ``ask(connection)`` on a fresh connection; again after transient errors, in time."""
    while True:
        marker = connect_deadline.set(deadline)
        try:
            with own(engine).connect() as connection:
                remaining = max(deadline - time.monotonic(), MIN_READ_TIMEOUT)
                bound_socket(connection.connection.dbapi_connection, remaining)
                answer = ask(connection)
                connection.rollback()
                return answer
        except DBAPIError as error:
            # The lookup's own connection may meet the same trouble: try again in time.
            if classify(error).kind not in _RETRYABLE or time.monotonic() + _PAUSE >= deadline:
                raise
        finally:
            connect_deadline.reset(marker)
        pause(_PAUSE)  # awaited on an event loop (async adapter)
