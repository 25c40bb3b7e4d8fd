"""Commit markers: one row per writing transaction that tells, after a lost COMMIT, if it committed.

When enabled, every transaction of the unit of work that writes also inserts a row
with a unique token into ``retrying_uow_commit_markers``; a transaction that wrote
nothing has no lost-COMMIT question and writes no marker. If the connection is lost
while COMMIT is in flight, a fresh connection first lets the database settle the
original transaction (MySQL/MariaDB: ``KILL`` of the old connection, when the server
still has it) and then looks the token up with a locking read, which waits while the
original transaction is still finishing. Found: the transaction committed. Absent: it
rolled back and can be rerun.

Create the table once with
[`create_commit_marker_table`][adapters.sqlalchemy.create_commit_marker_table], in a migration with
the statements of [`commit_marker_ddl`][adapters.sqlalchemy.commit_marker_ddl], or let Alembic
manage it: add [`commit_markers_metadata`][adapters.sqlalchemy.commit_markers_metadata] to
``target_metadata``.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING

from sqlalchemy import Column, DateTime, MetaData, String, Table, delete, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateIndex, CreateTable

from adapters.sqlalchemy._listeners import MIN_READ_TIMEOUT, connect_deadline, pause
from adapters.sqlalchemy._strict import own
from uow import ErrorKind

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Dialect, Engine

    from adapters.sqlalchemy._databases import AttemptState, DatabaseSupport

MARKER_TABLE = "retrying_uow_commit_markers"

commit_markers_metadata = MetaData()
"""The metadata of the marker table; add it to Alembic's ``target_metadata`` (a list)."""
commit_markers_table = Table(
    MARKER_TABLE,
    commit_markers_metadata,
    Column("token", String(32), primary_key=True),
    Column("created_at", DateTime, nullable=False, index=True),
)
"""The marker table."""

_LOOKUP_RETRYABLE = frozenset(
    {
        ErrorKind.DISCONNECT,
        ErrorKind.UNAVAILABLE,
        ErrorKind.LOCK_WAIT,
        ErrorKind.INTERRUPTED,
        ErrorKind.FAILOVER,  # a node leaving the Primary component: the next one can tell
    }
)
_LOOKUP_PAUSE = 0.05
PRUNE_TIMEOUT = 5.0
"""Seconds the pruning of old markers may take (reads and connect included)."""
_MIN_PRUNE_TIME = 0.1
_PLACEHOLDERS = {
    "qmark": "?, ?",
    "format": "%s, %s",
    "pyformat": "%s, %s",
    "numeric": ":1, :2",
    "numeric_dollar": "$1, $2",
    "named": ":token, :created_at",
}
logger = logging.getLogger("retrying_uow")


def create_commit_marker_table(engine: Engine) -> None:
    """Create the marker table if it does not exist (strict mode lets it through)."""
    commit_markers_metadata.create_all(own(engine), tables=[commit_markers_table])


def commit_marker_ddl(dialect: Dialect) -> list[str]:
    """Return the DDL of the marker table for a dialect, one statement per item.

    For migration tools: ``for statement in commit_marker_ddl(op.get_bind().dialect):
    op.execute(statement)``.
    """
    indexes = sorted(commit_markers_table.indexes, key=lambda index: str(index.name))
    statements: list[CreateTable | CreateIndex] = [
        CreateTable(commit_markers_table),
        *(CreateIndex(index) for index in indexes),
    ]
    return [str(statement.compile(dialect=dialect)).strip() for statement in statements]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class CommitMarkers:
    """Writes, looks up and prunes the markers of one Engine."""

    def __init__(
        self,
        engine: Engine,
        support: DatabaseSupport,
        *,
        retention: dt.timedelta = dt.timedelta(hours=1),
        prune_interval: float = 300.0,
    ) -> None:
        """Markers older than ``retention`` are deleted, at most once per ``prune_interval`` s."""
        # The lookups and the pruning run on connections of their own, outside any
        # attempt: marked as the library's, so that strict mode lets them through.
        self._engine = own(engine)
        self._support = support
        self._retention = retention
        self._prune_interval = prune_interval
        self._next_prune = 0.0
        self._pruning = threading.Lock()
        placeholders = _PLACEHOLDERS.get(engine.dialect.paramstyle, "%s, %s")
        # The driver's own SQL: half the client time of a Core insert.
        self._insert = f"INSERT INTO {MARKER_TABLE} (token, created_at) VALUES ({placeholders})"  # noqa: S608
        self._named = engine.dialect.paramstyle == "named"

    @staticmethod
    def new_token() -> str:
        """Return a fresh unique token."""
        return uuid.uuid4().hex

    def write(self, connection: Connection, token: str) -> None:
        """Insert the marker inside the transaction that is about to commit."""
        now = _utcnow()
        params = {"token": token, "created_at": now} if self._named else (token, now)
        connection.exec_driver_sql(self._insert, params)

    def lookup(self, token: str, state: AttemptState, timeout: float) -> bool:
        """Tell whether the transaction that wrote ``token`` committed.

        Lets the database settle the original transaction first, then reads the marker
        with a locking read bounded by ``timeout``. Raises the driver's error if the
        server cannot be reached: the outcome then stays unknown.
        """
        deadline = time.monotonic() + max(timeout, MIN_READ_TIMEOUT)
        while True:
            try:
                return self._lookup_once(token, state, deadline)
            except DBAPIError as error:
                # The lookup's own connection may meet the same trouble: try again in time.
                transient = self._support.classify(error).kind in _LOOKUP_RETRYABLE
                if not transient or time.monotonic() + _LOOKUP_PAUSE >= deadline:
                    raise
                pause(_LOOKUP_PAUSE)  # awaited on an event loop (async adapter)

    def _lookup_once(self, token: str, state: AttemptState, deadline: float) -> bool:
        seconds = max(deadline - time.monotonic(), MIN_READ_TIMEOUT)
        query = select(commit_markers_table.c.token).where(commit_markers_table.c.token == token)
        marker = connect_deadline.set(deadline)
        try:
            with self._engine.connect() as connection:
                changed = False
                try:
                    dbapi_connection = connection.connection.dbapi_connection
                    self._support.bound_reads(connection.dialect, dbapi_connection, seconds + 1.0)
                    changed = True
                    self._support.settle(connection, state, seconds)
                    found = connection.execute(query.with_for_update(read=True)).first()
                    connection.rollback()
                finally:
                    if changed:
                        # Its session settings were changed for the lookup: never reuse it.
                        connection.invalidate()
        finally:
            connect_deadline.reset(marker)
        return found is not None

    def maybe_prune(self, deadline: float) -> None:
        """Delete markers past their retention, at most once per interval (any thread).

        It runs right after a commit, so it is bounded (by ``PRUNE_TIMEOUT`` and by the
        operation's ``deadline``) and never fails the operation: a silent network or a
        locked table only delays pruning.
        """
        now = time.monotonic()
        seconds = min(PRUNE_TIMEOUT, deadline - now)
        if seconds < _MIN_PRUNE_TIME or now < self._next_prune:
            return
        if not self._pruning.acquire(blocking=False):
            return
        marker = connect_deadline.set(now + seconds)
        try:
            self._next_prune = now + self._prune_interval
            cutoff = _utcnow() - self._retention
            with self._engine.connect() as connection:
                dbapi_connection = connection.connection.dbapi_connection
                undo = self._support.bound_reads(connection.dialect, dbapi_connection, seconds)
                try:
                    with connection.begin():
                        connection.execute(
                            delete(commit_markers_table).where(
                                commit_markers_table.c.created_at < cutoff
                            )
                        )
                finally:
                    if undo is not None:
                        undo()
        except Exception:  # the operation has committed; pruning can wait for next time
            logger.warning("pruning old commit markers failed", exc_info=True)
        finally:
            connect_deadline.reset(marker)
            self._pruning.release()
