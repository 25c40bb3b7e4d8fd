"""What MySQL and MariaDB errors mean for a retried operation (PyMySQL and mysqlclient).

The table follows the driver's errno, because the same exception class covers both
"server gone" and "access denied". SQLAlchemy's own disconnect detection
(``DBAPIError.connection_invalidated``) is trusted on top of it. Anything unknown is
permanent: retrying an error nobody understood is how duplicates happen.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, ProgrammingError

from uow import Classification, ErrorKind

if TYPE_CHECKING:
    import ssl
    from collections.abc import Mapping

    from sqlalchemy.engine import Connection, Engine, ExceptionContext

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
        # The server cannot be reached or takes no more connections.
        2002: ErrorKind.UNAVAILABLE,  # can't connect through the socket
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

_PERMANENT_CLASSES = (IntegrityError, ProgrammingError, DataError)
CAUSE_ATTRIBUTE = "__retrying_uow_cause__"
"""Attribute of a SQLAlchemy error holding the likely cause named by ``adapters.guard``."""


_DRIVER_PACKAGES = frozenset({"pymysql", "MySQLdb"})


def _driver_error(error: BaseException) -> BaseException | None:
    """Return the driver's exception behind ``error``, or ``None`` for any other error.

    Only a driver error's first argument is an error number: ``KeyError(2013)`` is a
    programming error, not a lost connection. Drivers are recognised by their base
    class ``MySQLError``, without importing them (both are optional).
    """
    original = error.orig if isinstance(error, DBAPIError) else error
    for cls in type(original).__mro__:
        if cls.__name__ == "MySQLError" and cls.__module__.split(".")[0] in _DRIVER_PACKAGES:
            return original
    return None


def errno_of(error: BaseException) -> int | None:
    """Return the server or client error number of a DBAPI or driver error, if any."""
    original = _driver_error(error)
    args: tuple[object, ...] = getattr(original, "args", ())
    if args and isinstance(args[0], int) and not isinstance(args[0], bool):
        return args[0]
    return None


def _timed_out(error: BaseException) -> bool:
    """Tell a client-side read timeout (PyMySQL's 2013 "... (timed out)") from a lost link."""
    args: tuple[object, ...] = getattr(_driver_error(error), "args", ())
    return len(args) > 1 and isinstance(args[1], str) and "timed out" in args[1]


def classify(error: BaseException) -> Classification:
    """Say what a MySQL/MariaDB error means for the operation (see DESIGN's table)."""
    errno = errno_of(error)
    kind = ERRNO_KINDS.get(errno) if errno is not None else None
    cause = getattr(error, CAUSE_ATTRIBUTE, None)
    if kind is ErrorKind.DISCONNECT and _timed_out(error):
        return Classification(ErrorKind.INTERRUPTED, errno, cause)
    if kind is not None:
        return Classification(kind, errno, cause)
    if isinstance(error, _PERMANENT_CLASSES):
        return Classification(ErrorKind.PERMANENT, errno)
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return Classification(ErrorKind.DISCONNECT, errno, cause)
    if errno == 0:  # PyMySQL's InterfaceError(0, ''): the socket is already closed
        return Classification(ErrorKind.DISCONNECT, errno)
    return Classification(ErrorKind.PERMANENT, errno)


def _invalidate_on_failover(context: ExceptionContext) -> None:
    """Make SQLAlchemy treat failover errors as disconnects.

    A read-only or non-primary server still answers pings, so neither the pool nor
    ``pool_pre_ping`` would ever drop its connections. Marking the error as a
    disconnect lets SQLAlchemy invalidate the connection and the pool's older ones.
    """
    if classify(context.original_exception).kind is ErrorKind.FAILOVER:
        context.is_disconnect = True


def install(engine: Engine) -> None:
    """Extend an engine's disconnect detection with the failover errors (idempotent)."""
    if not event.contains(engine, "handle_error", _invalidate_on_failover):
        event.listen(engine, "handle_error", _invalidate_on_failover)


def bound_reads(dbapi_connection: object, seconds: float | None) -> float | None:
    """Bound a PyMySQL connection's reads to ``seconds`` (None: unbounded); return the old bound.

    A silent network (packets dropped, no reset) otherwise blocks a read forever. Other
    drivers fix their timeouts at connect time; for them this does nothing.
    """
    if not hasattr(dbapi_connection, "_read_timeout"):
        return None
    previous: float | None = dbapi_connection._read_timeout  # noqa: SLF001 -- PyMySQL has no setter
    dbapi_connection._read_timeout = seconds  # noqa: SLF001
    sock = getattr(dbapi_connection, "_sock", None)
    if not hasattr(dbapi_connection, "_current_timeout") and sock is not None:
        sock.settimeout(seconds)  # older PyMySQL applies the bound only at connect
    return previous


def thread_id(dbapi_connection: object) -> int | None:
    """Return the server's id of a connection (PyMySQL and mysqlclient), for ``KILL``."""
    method = getattr(dbapi_connection, "thread_id", None)
    if method is None:
        return None
    value = method()
    return value if isinstance(value, int) else None


@dataclass(frozen=True, slots=True)
class ServerFacts:
    """What a connection's server said about itself, read once per connection."""

    wait_timeout: float
    node: str
    """``hostname:port`` of the server: which node, for a KILL that must hit the right one."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Who ran an attempt's transaction, so that a lost COMMIT can be settled safely."""

    thread_id: int
    node: str
    alive_at: float
    """``time.time()`` when the connection was known alive (its attempt began)."""


_FACTS = "retrying_uow_server_facts"


def server_facts(connection: Connection) -> ServerFacts | None:
    """Return the server facts of a MySQL/MariaDB connection, reading them on first use.

    One round trip per connection, on its first attempt (after the driver's
    ``init_command``, so a per-session ``wait_timeout`` is seen). A connection that
    fails here (already stale) is left for the attempt's first statement to fail on,
    where SQLAlchemy invalidates it as it should; ``None`` is returned meanwhile.
    """
    info = connection.info
    facts = info.get(_FACTS)
    dbapi_connection: Any = connection.connection.dbapi_connection
    if facts is None and connection.dialect.name in {"mysql", "mariadb"}:
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SELECT @@SESSION.wait_timeout, @@hostname, @@port")
                row = cursor.fetchone()
            finally:
                cursor.close()
        except Exception:  # noqa: BLE001 -- see the docstring
            return None
        if row is not None:
            facts = info[_FACTS] = ServerFacts(float(row[0]), f"{row[1]}:{row[2]}")
    return facts if isinstance(facts, ServerFacts) else None


def known_server_facts(connection: Connection) -> ServerFacts | None:
    """Return the server facts already read for a connection, without any I/O."""
    facts = connection.info.get(_FACTS)
    return facts if isinstance(facts, ServerFacts) else None


def connect_sharing_tls_context(
    dialect: Any, _record: Any, cargs: tuple[Any, ...], cparams: dict[str, Any]
) -> Any:
    """Connect with PyMySQL, building its default TLS context once per process.

    With no TLS option, PyMySQL 1.2 builds a TLS context from the system's CA store
    on every connect (tens of milliseconds), to use TLS if the server offers it. The
    context for that mode never differs, so it is built once and shared; the mode
    itself (TLS when offered, plain otherwise) is unchanged. Used as a ``do_connect``
    listener; returns ``None`` (SQLAlchemy connects as usual) for other drivers.
    """
    if dialect.driver != "pymysql":
        return None
    return _shared_context_connection_class()(*cargs, **cparams)


@functools.cache
def _shared_context_connection_class() -> type:
    import pymysql  # type: ignore[import-untyped, unused-ignore]  # noqa: PLC0415 -- optional

    lock = threading.Lock()
    shared: list[ssl.SSLContext] = []

    class SharedTlsContextConnection(pymysql.connections.Connection):  # type: ignore[misc, unused-ignore]
        def _create_ssl_ctx(self, sslp: Any) -> Any:
            if not (isinstance(sslp, dict) and not sslp):
                return super()._create_ssl_ctx(sslp)
            with lock:
                if not shared:
                    shared.append(super()._create_ssl_ctx(sslp))
            return shared[0]

    return SharedTlsContextConnection
