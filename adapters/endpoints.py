"""Several database endpoints behind one Engine: skip, for a while, the ones that just failed.

For a Galera cluster (or any set of interchangeable MySQL/MariaDB servers) without a
proxy in front. New connections go to the first endpoint of the list that is not
resting; an endpoint rests for ``rest`` seconds after

- a connection to it could not be made (2003, 1040, a timeout, ...), or
- SQLAlchemy invalidated a connection to it because of an error: a lost connection
  (2006, 2013) or a failover error (1047 "WSREP has not yet prepared node for
  application use", 1180, read-only), which [`adapters.mysql`][adapters.mysql] marks as a
  disconnect precisely so the pool drops such connections.

The same holds when the error comes while a new connection is being set up (SQLAlchemy's
first connection runs queries of its own, and a non-Primary Galera node fails them).
So when the runner reruns an operation after one of those errors, the rerun's fresh
connection goes to another endpoint instead of sticking to the bad one. When every
endpoint rests, the one whose rest ends first is tried anyway: never no answer at all.



    engine = create_engine("mysql+pymysql://app:secret@/app")   # host/port come from the list
    Endpoints(["db1:3306", "db2:3306", "db3:3306"]).install(engine)

The order is a preference (single writer first, like HAProxy's backup servers): writing
through one node at a time avoids most Galera certification conflicts.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import event

from adapters import mysql
from uow import ErrorKind

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from sqlalchemy.engine import Dialect, Engine, ExceptionContext
    from sqlalchemy.pool import ConnectionPoolEntry

__all__ = ["Endpoint", "Endpoints"]

logger = logging.getLogger("retrying_uow")
_INFO_KEY = "retrying_uow_endpoint"
_FAILING = frozenset({ErrorKind.DISCONNECT, ErrorKind.UNAVAILABLE, ErrorKind.FAILOVER})


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One server address."""

    host: str
    port: int = 3306

    @classmethod
    def parse(cls, value: str | tuple[str, int] | Endpoint) -> Endpoint:
        """Accept ``"host"``, ``"host:port"``, ``(host, port)`` or an Endpoint."""
        if isinstance(value, Endpoint):
            return value
        if isinstance(value, tuple):
            return cls(value[0], int(value[1]))
        host, _, port = value.rpartition(":") if ":" in value else (value, "", "3306")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class Endpoints:
    """An ordered list of endpoints with a rest period for those that just failed.

    Thread-safe; one instance per Engine (``install`` it once).
    """

    def __init__(
        self,
        endpoints: Iterable[str | tuple[str, int] | Endpoint],
        *,
        rest: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Take the endpoints in order of preference; ``rest`` is in seconds."""
        self.endpoints = tuple(Endpoint.parse(value) for value in endpoints)
        if not self.endpoints:
            raise ValueError("endpoints: give at least one host:port")
        if rest < 0:
            raise ValueError(f"rest must be >= 0, not {rest}")
        self.rest = rest
        self._clock = clock
        self._resting_until: dict[Endpoint, float] = {}
        self._lock = threading.Lock()
        self._setting_up = threading.local()
        """The endpoint of the connection this thread is setting up, until it is ready."""

    def __repr__(self) -> str:
        return f"Endpoints([{', '.join(map(str, self.endpoints))}], rest={self.rest})"

    def install(self, engine: Engine) -> Engine:
        """Make ``engine`` connect through these endpoints; return it."""
        event.listen(engine, "do_connect", self._connect)
        event.listen(engine, "handle_error", self._on_error)
        event.listen(engine.pool, "connect", self._on_ready)  # after SQLAlchemy's own set-up
        event.listen(engine.pool, "invalidate", self._on_invalidate)
        event.listen(engine.pool, "soft_invalidate", self._on_invalidate)
        return engine

    def order(self) -> list[Endpoint]:
        """Endpoints to try now: those not resting in preference order, then the resting ones."""
        resting = self.resting()
        with self._lock:
            until = {e: self._resting_until[e] for e in resting}
        ready = [e for e in self.endpoints if e not in until]
        return ready + sorted(until, key=until.__getitem__)

    def resting(self) -> list[Endpoint]:
        """Endpoints resting now, in preference order."""
        now = self._clock()
        with self._lock:
            return [e for e in self.endpoints if self._resting_until.get(e, 0.0) > now]

    def mark_failed(self, endpoint: Endpoint, reason: object = None) -> None:
        """Let ``endpoint`` rest for ``rest`` seconds."""
        with self._lock:
            self._resting_until[endpoint] = self._clock() + self.rest
        logger.info("endpoint %s rests for %.1f s (%s)", endpoint, self.rest, _short(reason))

    def _connect(
        self,
        dialect: Dialect,
        conn_rec: ConnectionPoolEntry,
        cargs: tuple[Any, ...],
        cparams: dict[str, Any],
    ) -> Any:
        """SQLAlchemy's ``do_connect`` hook: connect to the first endpoint that answers."""
        self._setting_up.endpoint = None
        last_error: Exception | None = None
        for endpoint in self.order():
            params = {**cparams, "host": endpoint.host, "port": endpoint.port}
            try:
                connection = dialect.connect(*cargs, **params)
            except dialect.loaded_dbapi.Error as error:
                self.mark_failed(endpoint, error)
                last_error = error
                continue
            conn_rec.info[_INFO_KEY] = endpoint
            self._setting_up.endpoint = endpoint
            return connection
        assert last_error is not None  # noqa: S101 -- there is at least one endpoint
        raise last_error

    def _on_ready(self, _dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        self._setting_up.endpoint = None

    def _on_error(self, context: ExceptionContext) -> None:
        """Rest the endpoint of a connection that failed while being set up (no pool event)."""
        endpoint = getattr(self._setting_up, "endpoint", None)
        if context.connection is not None or endpoint is None:
            return
        self._setting_up.endpoint = None
        if context.is_disconnect or mysql.classify(context.original_exception).kind in _FAILING:
            self.mark_failed(endpoint, context.original_exception)

    def _on_invalidate(
        self, _dbapi_connection: Any, record: ConnectionPoolEntry, error: BaseException | None
    ) -> None:
        endpoint = record.info.get(_INFO_KEY)
        if error is not None and isinstance(endpoint, Endpoint):
            self.mark_failed(endpoint, error)


def _short(reason: object) -> str:
    args: tuple[object, ...] = getattr(reason, "args", ())
    return repr(args[:2]) if args else type(reason).__name__
