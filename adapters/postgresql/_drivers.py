"""What differs between the PostgreSQL drivers: how waits are bounded, transaction status, errors.

Reads are bounded at the TCP level, because nothing else bounds them on every driver:
``statement_timeout`` is the server's own timer, so a dead network or a dead host (the
server never hears of the client again) would still block the client forever, and
``asyncio.timeout`` overshoots by seconds (psycopg's async cancel waits 5 s more,
SQLAlchemy's asyncpg close 2 s). So at the BEGIN of each attempt the connection's
socket gets:

- ``TCP_USER_TIMEOUT`` = the attempt's remaining budget (in whole seconds, rounded up):
  data sent and not acknowledged for that long (a query in flight on a dead network)
  ends the connection;
- keepalive (``SO_KEEPALIVE``, idle = a half of the budget, interval = a quarter, 2
  probes): a connection waiting on a silent peer with nothing in flight ends too.

A live server's kernel answers both, so a long query on a healthy server is never cut.
A server whose processes are frozen (SIGSTOP) is not bounded: its kernel still
acknowledges every packet. The options stay on the pooled connection (they only
detect a dead peer sooner), so nothing is undone.

========================  ==========================================  ======================
driver                    read bound (each attempt)                   connect bound
========================  ==========================================  ======================
psycopg (sync, async)     the socket options, on its ``fileno()``     ``connect_timeout``
                                                                      (whole s, at least 2),
                                                                      ``tcp_user_timeout``,
                                                                      ``keepalives*``
asyncpg                   the socket options, on its transport's      ``timeout``
                          socket (asyncpg itself sets none)
========================  ==========================================  ======================
"""

from __future__ import annotations

import contextlib
import math
import socket
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect

_PSYCOPG = frozenset({"psycopg", "psycopg_async", "psycopg2"})
_IDLE, _INERROR = 0, 3  # libpq's PQTRANS_IDLE and PQTRANS_INERROR
_KEEPALIVE_PROBES = 2
_MIN_CONNECT_TIMEOUT = 2  # libpq's and psycopg's floor
_applied: weakref.WeakKeyDictionary[Any, tuple[int, int, int]] = weakref.WeakKeyDictionary()
"""The socket bounds last set on each driver connection."""


def raw(dbapi_connection: Any) -> Any:
    """Return the driver's own connection (under SQLAlchemy's asyncio adaptation, if any)."""
    return getattr(dbapi_connection, "_connection", dbapi_connection)


def fileno_of(dbapi_connection: Any) -> int | None:
    """Return the socket's file descriptor of a connection, if it has one open."""
    return _fileno(raw(dbapi_connection))


def _fileno(connection: Any) -> int | None:
    fileno = getattr(connection, "fileno", None)
    if fileno is None:  # asyncpg: the socket of its transport (no public accessor)
        transport = getattr(connection, "_transport", None)
        sock = None if transport is None else transport.get_extra_info("socket")
        fileno = getattr(sock, "fileno", None)
    if fileno is None:
        return None
    try:
        number = int(fileno())
    except (OSError, ValueError, TypeError, AttributeError):  # a closed connection
        return None
    return number if number >= 0 else None


def socket_bounds(seconds: float) -> tuple[int, int, int]:
    """Return (TCP_USER_TIMEOUT ms, keepalive idle s, keepalive interval s) for a budget."""
    return (
        max(1000, math.ceil(seconds * 1000)),
        max(1, int(seconds / 2)),
        max(1, int(seconds / 4)),
    )


def bound_socket(dbapi_connection: Any, seconds: float) -> None:
    """Make the connection's socket give up on a silent peer after about ``seconds``.

    The bound is rounded up to whole seconds, and set only when it changes for the
    connection (most attempts start with a full budget: nothing to do). A unix-socket
    connection has no TCP to bound (and needs none): it is left alone.
    """
    connection = raw(dbapi_connection)
    bounds = socket_bounds(math.ceil(seconds))
    try:
        if _applied.get(connection) == bounds:
            return
    except TypeError:  # a connection without weak references: set them every time
        pass
    fileno = _fileno(connection)
    if fileno is None:
        return
    user_timeout, idle, interval = bounds
    # The driver owns the descriptor: wrap it without a dup, and detach before closing.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fileno)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, user_timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, _KEEPALIVE_PROBES)
    except OSError:  # not TCP (a unix socket), or already closed
        return
    finally:
        sock.detach()
    with contextlib.suppress(TypeError):
        _applied[connection] = bounds


def bound_connect(driver: str, params: dict[str, Any], seconds: float) -> None:
    """Bound the connect and login of a new connection by the driver's own options."""
    if driver in _PSYCOPG:
        bound = max(_MIN_CONNECT_TIMEOUT, math.ceil(seconds))
        given = params.get("connect_timeout")
        params["connect_timeout"] = bound if given is None else min(int(given), bound)
        # Also for what SQLAlchemy reads right after connecting (its first-connect queries).
        user_timeout, idle, interval = socket_bounds(seconds)
        params.setdefault("tcp_user_timeout", user_timeout)
        params.setdefault("keepalives", 1)
        params.setdefault("keepalives_idle", idle)
        params.setdefault("keepalives_interval", interval)
        params.setdefault("keepalives_count", _KEEPALIVE_PROBES)
    elif driver == "asyncpg":
        given = params.get("timeout")
        params["timeout"] = seconds if given is None else min(float(given), seconds)


def transaction_status(dbapi_connection: Any) -> int | None:
    """Return libpq's transaction status of the connection as the driver last heard it, if known.

    psycopg keeps it from the server's last ReadyForQuery; asyncpg keeps it private.
    """
    info = getattr(raw(dbapi_connection), "info", None)
    status = getattr(info, "transaction_status", None)  # psycopg 3
    if status is None:
        get_status = getattr(raw(dbapi_connection), "get_transaction_status", None)  # psycopg2
        status = get_status() if callable(get_status) else None
    return None if status is None else int(status)


def in_transaction(dbapi_connection: Any) -> bool:
    """Tell whether a transaction is open (``True`` when the driver cannot tell)."""
    status = transaction_status(dbapi_connection)
    if status is not None:
        return status != _IDLE  # in a transaction, aborted, busy, or unknown (a bad link)
    connection = raw(dbapi_connection)
    is_in_transaction = getattr(connection, "is_in_transaction", None)  # asyncpg
    if callable(is_in_transaction):
        with contextlib.suppress(Exception):
            return bool(is_in_transaction())
    return True


def aborted(dbapi_connection: Any) -> bool | None:
    """Tell whether the open transaction is aborted by an error (``None``: cannot tell)."""
    status = transaction_status(dbapi_connection)
    return None if status is None else status == _INERROR


def driver_exception(dialect: Dialect, sqlstate: str, message: str) -> Exception:
    """Return the exception the dialect's driver raises for a server error ``sqlstate``."""
    if dialect.driver in {"psycopg", "psycopg_async"}:
        from psycopg import errors  # noqa: PLC0415 -- only with psycopg

        made: Exception = errors.lookup(sqlstate)(message)
        return made
    if dialect.driver == "asyncpg":
        # What SQLAlchemy's asyncpg adaptation raises for a server error: its generic
        # Error with the SQLSTATE copied from asyncpg's exception.
        adapted: Any = dialect.loaded_dbapi.Error(message)
        adapted.pgcode = adapted.sqlstate = sqlstate
        return adapted  # type: ignore[no-any-return]
    msg = f"faults cannot be simulated with the {dialect.driver} driver (psycopg, asyncpg can)"
    raise NotImplementedError(msg)
