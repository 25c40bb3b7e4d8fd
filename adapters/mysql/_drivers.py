"""What differs between the MySQL drivers: read bounds, connect bounds, errors, status flags.

Keyed by SQLAlchemy's name of the driver (``dialect.driver``). Measured against
MariaDB 10.11:

========================  ========================================  =====================
driver                    read bound on an open connection          connect bound
========================  ========================================  =====================
PyMySQL                   ``_read_timeout`` + the socket (seconds)   ``read_timeout`` +
                                                                     ``connect_timeout``
mysql-connector-python    ``read_timeout`` property (whole seconds)  ``connection_timeout``
                                                                     + ``read_timeout``
asyncmy                   ``_read_timeout`` (seconds)                ``read_timeout``
mysqlclient               none at run time                           ``connect_timeout`` +
                                                                     ``read_timeout`` (whole s)
MariaDB Connector/Python  none at run time                           ``connect_timeout`` +
                                                                     ``read_timeout`` (whole s)
aiomysql                  none (only ``asyncio.timeout``)            ``connect_timeout``
========================  ========================================  =====================

The read bound is set when an attempt begins, to the attempt's remaining budget, and
undone when it ends. A driver without a run-time read bound keeps, for the life of the
connection, the ``read_timeout`` it was opened with: the remaining budget of the attempt
that opened it (measured: a pooled mysqlclient or MariaDB Connector/Python connection
opened under a 6 s budget made a later 2 s operation wait 6.0 s on a stopped server).
The async runner bounds every attempt with ``asyncio.timeout`` as well, which is all
that bounds aiomysql.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Callable

Recipe = Literal["args", "keywords", "attribute"]
"""How the driver's exceptions take an error number: ``cls(errno, msg)``,
``cls(msg=..., errno=...)``, or ``cls(msg)`` and then ``.errno``."""


@dataclass(frozen=True, slots=True)
class Driver:
    """One MySQL driver's specifics."""

    name: str
    recipe: Recipe = "args"
    classes: tuple[tuple[int, str], ...] = ()
    """The exception class the driver raises for an errno, where it is not OperationalError."""
    whole_seconds: bool = False
    """Its timeouts take whole seconds only."""
    connect_timeout: str | None = "connect_timeout"
    read_timeout: str | None = "read_timeout"
    """Connect parameters bounding the handshake and reads (``None``: the driver has none)."""

    def error(self, dbapi: Any, errno: int, message: str) -> Exception:
        """Return the driver's exception for ``errno``, as the driver would raise it."""
        name = dict(self.classes).get(errno, "OperationalError")
        cls = getattr(dbapi, name, None) or dbapi.OperationalError
        if self.recipe == "keywords":
            made: Exception = cls(msg=message, errno=errno)
        elif self.recipe == "attribute":
            made = cls(message)
            with contextlib.suppress(AttributeError, TypeError):  # a read-only C attribute
                made.errno = errno  # type: ignore[attr-defined]
        else:
            made = cls(errno, message)
        return made

    def socket_of(self, connection: Any) -> int | None:
        """Return the socket of a driver whose reads cannot be bounded at run time, or None."""
        if self.name == "mysqldb":
            fileno = getattr(connection, "fileno", None)
            return fileno() if callable(fileno) else None
        if self.name == "mariadbconnector":
            # Its public ``socket`` property wraps the descriptor in a socket object that
            # closes it when collected: the descriptor itself is all the watchdog needs.
            get_socket = getattr(connection, "_get_socket", None)
            number = get_socket() if callable(get_socket) else None
            return number if isinstance(number, int) and number >= 0 else None
        return None

    def seconds(self, value: float) -> float:
        """Round a bound up to what the driver accepts."""
        return float(max(1, math.ceil(value))) if self.whole_seconds else value

    def bound_connect(self, params: dict[str, Any], seconds: float) -> None:
        """Bound the connect and the login of a new connection (its handshake reads)."""
        bound: float | int = self.seconds(seconds)
        if self.whole_seconds:
            bound = int(bound)
        for option in (self.connect_timeout, self.read_timeout):
            if option is not None:
                given = params.get(option)
                params[option] = bound if given is None else min(given, bound)

    def bound_reads(self, connection: Any, seconds: float) -> Callable[[], None] | None:
        """Bound reads on an open connection; return how to undo it (``None``: cannot)."""
        if self.name in {"pymysql", "asyncmy"}:
            return _private_read_timeout(self.raw(connection), seconds)
        if self.name == "mysqlconnector":
            return _connector_read_timeout(connection, self.seconds(seconds))
        return None

    def raw(self, connection: Any) -> Any:
        """Return the driver's own connection (under SQLAlchemy's adaptation, if async)."""
        if self.name in {"asyncmy", "aiomysql"}:
            return getattr(connection, "_connection", connection)
        return connection

    def in_transaction(self, connection: Any) -> bool:
        """Tell whether the driver knows a transaction is open (``True`` when it cannot tell)."""
        return in_transaction(self.raw(connection))


SERVER_STATUS_IN_TRANS = 1
"""The server's status flag for an open transaction, in every OK packet."""


def in_transaction(raw: Any) -> bool:
    """Tell whether a driver's connection knows a transaction is open (``True``: cannot tell).

    mysql-connector-python says so in its ``in_transaction`` property; PyMySQL, MariaDB
    Connector/Python, asyncmy and aiomysql keep the server's last status flags in
    ``server_status``; mysqlclient shows neither. Read after the attempt's own COMMIT or
    ROLLBACK, whose reply carries the flags, so a driver that only reads them from OK
    packets is up to date.
    """
    flag = getattr(raw, "in_transaction", None)
    if isinstance(flag, bool):
        return flag
    status = getattr(raw, "server_status", None)
    if isinstance(status, int) and not isinstance(status, bool):
        return bool(status & SERVER_STATUS_IN_TRANS)
    return True


def _private_read_timeout(raw: Any, seconds: float) -> Callable[[], None] | None:
    """PyMySQL and asyncmy: a private attribute read before each packet (no setter)."""
    if not hasattr(raw, "_read_timeout"):
        return None
    previous = raw._read_timeout  # noqa: SLF001 -- the driver has no public setter
    raw._read_timeout = seconds  # noqa: SLF001
    sock: Any = getattr(raw, "_sock", None)
    legacy = not hasattr(raw, "_current_timeout") and hasattr(sock, "settimeout")
    if legacy:
        sock.settimeout(seconds)  # older PyMySQL applies the bound only at connect

    def undo() -> None:
        raw._read_timeout = previous  # noqa: SLF001
        current = raw._sock  # noqa: SLF001
        if legacy and current is not None:
            current.settimeout(previous)

    return undo


def _connector_read_timeout(raw: Any, seconds: float) -> Callable[[], None] | None:
    """mysql-connector-python: its public ``read_timeout`` property, whole seconds."""
    try:
        previous = raw.read_timeout
        raw.read_timeout = int(seconds)
    except (AttributeError, TypeError, ValueError):
        return None

    def undo() -> None:
        raw.read_timeout = previous

    return undo


DRIVERS = {
    driver.name: driver
    for driver in (
        Driver("pymysql"),
        Driver("mysqldb", whole_seconds=True),
        Driver(
            "mysqlconnector",
            recipe="keywords",
            classes=((2013, "InterfaceError"), (2003, "InterfaceError"), (1213, "InternalError"),
                     (1205, "DatabaseError"), (1317, "DatabaseError")),
            whole_seconds=True,
            connect_timeout="connection_timeout",
        ),
        Driver(
            "mariadbconnector",
            recipe="attribute",
            classes=((2013, "InterfaceError"), (2006, "InterfaceError")),
            whole_seconds=True,
        ),
        Driver("asyncmy"),
        Driver("aiomysql", read_timeout=None),
    )
}  # fmt: skip
"""Every driver by SQLAlchemy's name for it."""

UNKNOWN = Driver("unknown", connect_timeout=None, read_timeout=None)
"""A driver the table does not know: nothing is bounded."""


def driver(name: str) -> Driver:
    """Return the specifics of a driver by SQLAlchemy's name for it."""
    return DRIVERS.get(name, UNKNOWN)
