"""Commit markers: one row per transaction that tells, after a lost COMMIT, if it committed.

When enabled, every transaction of the unit of work also inserts a row with a
unique token into ``retrying_uow_commit_markers``. If the connection is lost while
COMMIT is in flight, a fresh connection first ends the old one (``KILL``, so a
transaction the server still holds is settled) and then looks the token up with a
locking read, which waits while the original transaction is still finishing (and, on
Galera, until the node has applied what the cluster committed).
Found: the transaction committed. Absent: it rolled back and can be rerun.

Create the table once with :func:`create_commit_marker_table`, or in a migration
with the DDL from :func:`commit_marker_ddl` (MySQL/MariaDB)::

    CREATE TABLE retrying_uow_commit_markers (
        token VARCHAR(32) NOT NULL,
        created_at DATETIME NOT NULL,
        PRIMARY KEY (token)
    );
    CREATE INDEX ix_retrying_uow_commit_markers_created_at
        ON retrying_uow_commit_markers (created_at);
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
import uuid
from typing import TYPE_CHECKING

from sqlalchemy import Column, DateTime, MetaData, String, Table, delete, insert, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateIndex, CreateTable

from adapters import mysql, pooling
from uow import ErrorKind

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Dialect, Engine

MARKER_TABLE = "retrying_uow_commit_markers"

_metadata = MetaData()
markers_table = Table(
    MARKER_TABLE,
    _metadata,
    Column("token", String(32), primary_key=True),
    Column("created_at", DateTime, nullable=False, index=True),
)
_insert = insert(markers_table)
# KILL of a connection that is gone (1094), or of one that is not ours any more (1095).
_ALREADY_GONE = frozenset({1094, 1095})
_CLOCK_SLACK = 2.0  # seconds: Uptime has a 1 s resolution
_MYSQL_INSERT = f"INSERT INTO {MARKER_TABLE} (token, created_at) VALUES (%s, UTC_TIMESTAMP())"  # noqa: S608
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
logger = logging.getLogger("retrying_uow")


def create_commit_marker_table(engine: Engine) -> None:
    """Create the marker table if it does not exist."""
    _metadata.create_all(engine, tables=[markers_table])


def commit_marker_ddl(dialect: Dialect) -> str:
    """Return the DDL of the marker table for a dialect, for migration tools (Alembic)."""
    statements = [CreateTable(markers_table)] + [
        CreateIndex(index) for index in sorted(markers_table.indexes, key=lambda i: str(i.name))
    ]
    return ";\n".join(str(s.compile(dialect=dialect)).strip() for s in statements) + ";\n"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class CommitMarkers:
    """Writes, looks up and prunes the markers of one Engine."""

    def __init__(
        self,
        engine: Engine,
        *,
        retention: dt.timedelta = dt.timedelta(hours=1),
        prune_interval: float = 300.0,
    ) -> None:
        """Markers older than ``retention`` are deleted, at most once per ``prune_interval`` s."""
        self._engine = engine
        self._retention = retention
        self._prune_interval = prune_interval
        self._next_prune = 0.0
        self._pruning = threading.Lock()
        self._is_mysql = engine.dialect.name in {"mysql", "mariadb"}

    @staticmethod
    def new_token() -> str:
        """Return a fresh unique token."""
        return uuid.uuid4().hex

    def write(self, connection: Connection, token: str) -> None:
        """Insert the marker inside the transaction that is about to commit."""
        if self._is_mysql:  # the driver's own SQL: half the client time of a Core insert
            connection.exec_driver_sql(_MYSQL_INSERT, (token,))
        else:
            connection.execute(_insert, {"token": token, "created_at": _utcnow()})

    def lookup(self, token: str, *, origin: mysql.Origin | None, timeout: float) -> bool:
        """Tell whether the transaction that wrote ``token`` committed.

        Ends the original connection first (if the server still has it), then reads the
        marker with a locking read bounded by ``timeout``. Raises the driver's error if
        the server cannot be reached: the outcome then stays unknown.
        """
        deadline = time.monotonic() + max(timeout, 0.1)
        while True:
            try:
                return self._lookup_once(token, origin, deadline - time.monotonic())
            except DBAPIError as error:
                # The lookup's own connection may meet the same trouble: try again in time.
                transient = mysql.classify(error).kind in _LOOKUP_RETRYABLE
                if not transient or time.monotonic() + _LOOKUP_PAUSE >= deadline:
                    raise
                time.sleep(_LOOKUP_PAUSE)

    def _lookup_once(self, token: str, origin: mysql.Origin | None, seconds: float) -> bool:
        seconds = max(seconds, 0.1)
        query = select(markers_table.c.token).where(markers_table.c.token == token)
        with pooling.bounded(time.monotonic() + seconds), self._engine.connect() as connection:
            try:
                mysql.bound_reads(connection.connection.dbapi_connection, seconds + 1.0)
                if self._is_mysql:
                    self._prepare(connection, origin, math.ceil(seconds))
                found = connection.execute(query.with_for_update(read=True)).first()
                connection.rollback()
            finally:
                if self._is_mysql:
                    # Its session settings were changed for the lookup: never reuse it.
                    connection.invalidate()
        return found is not None

    @staticmethod
    def _prepare(connection: Connection, origin: mysql.Origin | None, wait: int) -> None:
        """End the original transaction if it may still be open; bound and sync the read.

        Thread ids are per server and restart from 1 when it restarts, so the KILL is
        sent only on the same node (``hostname:port``) and when the server was up before
        the original connection was known alive; otherwise it could end someone else's.
        On Galera the read waits until the node has applied what the cluster committed
        (``wsrep_sync_wait``), or a committed marker could look absent on a lagging node.
        """
        if origin is not None:
            row = connection.exec_driver_sql("SELECT @@hostname, @@port").one()
            uptime = connection.exec_driver_sql("SHOW GLOBAL STATUS LIKE 'Uptime'").one()
            booted_at = time.time() - float(uptime[1])
            same_node = f"{row[0]}:{row[1]}" == origin.node
            if same_node and booted_at < origin.alive_at - _CLOCK_SLACK:
                try:
                    connection.exec_driver_sql(f"KILL CONNECTION {int(origin.thread_id)}")
                except DBAPIError as error:
                    if mysql.errno_of(error) not in _ALREADY_GONE:
                        raise
        connection.exec_driver_sql(f"SET SESSION innodb_lock_wait_timeout = {wait}")
        galera = connection.exec_driver_sql("SHOW VARIABLES LIKE 'wsrep_on'").first()
        if galera is not None and str(galera[1]).upper() == "ON":
            connection.exec_driver_sql("SET SESSION wsrep_sync_wait = 1")

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
        try:
            self._next_prune = now + self._prune_interval
            cutoff = _utcnow() - self._retention
            with pooling.bounded(now + seconds), self._engine.begin() as connection:
                dbapi_connection = connection.connection.dbapi_connection
                previous = mysql.bound_reads(dbapi_connection, seconds)
                try:
                    connection.execute(
                        delete(markers_table).where(markers_table.c.created_at < cutoff)
                    )
                finally:
                    mysql.bound_reads(dbapi_connection, previous)
        except Exception:  # the operation has committed; pruning can wait for next time
            logger.warning("pruning old commit markers failed", exc_info=True)
        finally:
            self._pruning.release()
