"""MySQL and MariaDB in the SQLAlchemy adapter: the ``DatabaseSupport`` of both, any driver."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.exc import DBAPIError

from adapters.mysql._drivers import driver, in_transaction
from adapters.mysql._errors import classify, errno_of
from adapters.mysql._tls import connect_sharing_tls_context
from adapters.sqlalchemy._guard import idle_cause
from adapters.sqlalchemy._statements import Effect, generic_effect
from uow import Classification, ErrorKind

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Dialect, Engine, ExceptionContext
    from sqlalchemy.orm import Session

    from adapters.sqlalchemy._databases import AttemptState
    from uow.testing import Fault

MESSAGES = {
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
"""The server's (or client's) message for the error numbers faults use by default."""

_DEFAULT_ERRNO = {
    ErrorKind.DISCONNECT: 2013,
    ErrorKind.DEADLOCK: 1213,
    ErrorKind.LOCK_WAIT: 1205,
    ErrorKind.FAILOVER: 1290,
    ErrorKind.INTERRUPTED: 1317,
}
# Statements after which MySQL commits on its own (its "implicit commit" list).
_IMPLICIT_COMMIT = frozenset(
    {"ALTER", "CREATE", "DROP", "RENAME", "TRUNCATE", "LOCK", "UNLOCK", "GRANT", "REVOKE",
     "ANALYZE", "OPTIMIZE", "REPAIR", "CHECK", "FLUSH", "RESET", "CACHE", "INSTALL",
     "UNINSTALL"}
)  # fmt: skip
_ALREADY_GONE = frozenset({1094, 1095})  # KILL of a connection that is gone, or not ours
_CLOCK_SLACK = 2.0  # seconds: Uptime has a 1 s resolution
_FACTS = "SELECT @@SESSION.wait_timeout, @@hostname, @@port, CONNECTION_ID()"
_DROPPED = frozenset({ErrorKind.FAILOVER})
_KNOWN_TO_SQLALCHEMY = frozenset({2006, 2013, 2014, 2045, 2055})
"""Lost-connection errnos every SQLAlchemy MySQL dialect recognises by itself."""


class MySQLSupport:
    """What the SQLAlchemy adapter needs to know about MySQL and MariaDB."""

    name = "MySQL/MariaDB"

    def classify(self, error: BaseException) -> Classification:
        """See [`adapters.mysql.classify`][adapters.mysql.classify]."""
        return classify(error)

    def install(self, engine: Engine) -> None:
        """Make SQLAlchemy drop the connections failover errors leave on the wrong server.

        Also mysql-connector's "Connection not available" (see the listener).
        """
        if not event.contains(engine, "handle_error", _invalidate_on_failover):
            event.listen(engine, "handle_error", _invalidate_on_failover)

    def bound_connect(self, dialect: Dialect, params: dict[str, Any], seconds: float) -> None:
        """Bound the connect and login of a new connection by the driver's own options."""
        driver(dialect.driver).bound_connect(params, seconds)

    def bound_reads(self, dialect: Dialect, dbapi_connection: Any, seconds: float) -> Any:
        """Bound reads on an open connection where the driver allows it at run time."""
        return driver(dialect.driver).bound_reads(dbapi_connection, seconds)

    def socket_of(self, dialect: Dialect, dbapi_connection: Any) -> int | None:
        """Return the socket of mysqlclient and MariaDB Connector/Python, for the watchdog."""
        return driver(dialect.driver).socket_of(dbapi_connection)

    def begin(self, connection: Connection, state: AttemptState) -> None:  # noqa: ARG002 -- protocol
        """Read the connection's server facts once: wait_timeout, which node, its id.

        One round trip per connection, on its first attempt (after the driver's
        ``init_command``, so a per-session ``wait_timeout`` is seen). A connection
        that fails here (already stale) is left for the attempt's first statement to
        fail on, where SQLAlchemy invalidates it as it should.
        """
        facts = state.connection
        if facts is None or facts.facts_read:
            return
        try:
            cursor = state.dbapi_connection.cursor()
            try:
                cursor.execute(_FACTS)
                row = cursor.fetchone()
            finally:
                cursor.close()
        except Exception:  # noqa: BLE001 -- see the docstring
            return
        if row is not None:
            facts.wait_timeout = float(row[0])
            facts.node = f"{row[1]}:{row[2]}"
            facts.server_id = int(row[3])
            facts.facts_read = True

    def effect(self, keyword: str, statement: str) -> tuple[Effect, str]:
        """Apply the generic rules, and refuse what MySQL commits implicitly after."""
        if keyword in _IMPLICIT_COMMIT:
            second = statement.lstrip()[len(keyword) :].lstrip()[:10].upper()
            if not second.startswith("TEMPORARY"):
                return Effect.ENDS, f"{keyword} (MySQL commits implicitly after it)"
        return generic_effect(keyword, statement)

    def cause(self, error: BaseException, state: AttemptState | None) -> str | None:
        """Name why the connection was lost, whatever the driver's errno for it.

        The same idle timeout is 2006 (PyMySQL, mysqlclient, MariaDB Connector), 2013
        (asyncmy, aiomysql) or -1 (mysql-connector-python, whose cursor pings first).
        """
        if classify(error).kind is not ErrorKind.DISCONNECT:
            return None
        found = idle_cause(state, time.monotonic(), "wait_timeout")
        return found or "the server closed the connection (KILL, crash or restart)"

    def fault_error(self, dialect: Dialect, fault: Fault) -> Exception:
        """Return the driver's own error for a fault, with the server's message."""
        errno = fault.errno if fault.errno is not None else _DEFAULT_ERRNO.get(fault.kind)
        if errno is None:
            msg = f"{fault} cannot be simulated on MySQL/MariaDB"
            raise NotImplementedError(msg)
        message = MESSAGES.get(errno, f"simulated {fault.kind.value} ({errno})")
        return driver(dialect.driver).error(dialect.loaded_dbapi, errno, message)

    def in_transaction(self, dbapi_connection: Any) -> bool:
        """Whatever the driver can tell."""
        # SQLAlchemy's async adaptation keeps the driver's connection in ``_connection``.
        return in_transaction(getattr(dbapi_connection, "_connection", dbapi_connection))

    def before_commit(self, session: Session, state: AttemptState) -> None:
        """Nothing to check or read: a lost COMMIT is settled by markers or a verification."""

    def outcome(self, engine: Engine, state: AttemptState, seconds: float) -> bool | None:  # noqa: ARG002
        """MySQL cannot tell without a marker."""
        return None

    def settle(self, connection: Connection, state: AttemptState, seconds: float) -> None:
        """End the original transaction if it may still be open; bound and sync the read.

        Connection ids are per server and restart from 1 when it restarts, so the KILL
        is sent only on the same node (``hostname:port``) and when the server was up
        before the original connection was known alive; otherwise it could end someone
        else's. On Galera the read waits until the node has applied what the cluster
        committed (``wsrep_sync_wait``), or a committed marker could look absent on a
        lagging node.
        """
        origin = state.connection
        if origin is not None and origin.server_id is not None:
            row = connection.exec_driver_sql("SELECT @@hostname, @@port").one()
            uptime = connection.exec_driver_sql("SHOW GLOBAL STATUS LIKE 'Uptime'").one()
            booted_at = time.time() - float(uptime[1])
            same_node = f"{row[0]}:{row[1]}" == origin.node
            if same_node and booted_at < state.origin_alive_at - _CLOCK_SLACK:
                try:
                    connection.exec_driver_sql(f"KILL CONNECTION {int(origin.server_id)}")
                except DBAPIError as error:
                    if errno_of(error) not in _ALREADY_GONE:
                        raise
        wait = max(1, math.ceil(seconds))
        connection.exec_driver_sql(f"SET SESSION innodb_lock_wait_timeout = {wait}")
        galera = connection.exec_driver_sql("SHOW VARIABLES LIKE 'wsrep_on'").first()
        if galera is not None and str(galera[1]).upper() == "ON":
            connection.exec_driver_sql("SET SESSION wsrep_sync_wait = 1")

    def lean(self, engine: Engine, connect_args: dict[str, Any]) -> None:
        """With PyMySQL and no TLS option given, share its default TLS context."""
        tls_given = any(key.startswith("ssl") for key in connect_args)
        if engine.dialect.driver == "pymysql" and not tls_given:
            event.listen(engine, "do_connect", connect_sharing_tls_context)


def _invalidate_on_failover(context: ExceptionContext) -> None:
    """Make SQLAlchemy treat failover errors, and lost connections it misses, as disconnects.

    A read-only or non-primary server still answers pings, so neither the pool nor
    ``pool_pre_ping`` would ever drop its connections. Some drivers report a lost
    connection with a number SQLAlchemy does not know: mysql-connector-python's -1
    "MySQL Connection not available" (its cursor pings first) and its own read timeout
    (3024, after which it has closed the connection), MariaDB Connector/C's read and
    write errors (5013, 5014). Marking them as disconnects lets SQLAlchemy invalidate
    the connection (and, for a failover, the pool's older ones).
    """
    original = context.original_exception
    kind = classify(original).kind
    lost = kind is ErrorKind.DISCONNECT and errno_of(original) not in _KNOWN_TO_SQLALCHEMY
    if kind in _DROPPED or lost:
        context.is_disconnect = True


SUPPORT = MySQLSupport()
"""The one instance, found by the SQLAlchemy adapter for the ``mysql`` and ``mariadb`` dialects."""
