"""Helpers of the integration tests: a view of a test database, a recording hook, runners."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pymysql  # type: ignore[import-untyped, unused-ignore]
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import NullPool

from adapters.sqlalchemy import SqlAlchemyUnitOfWork
from tests.integration.model import REPOSITORIES, Base
from uow import KindPolicy, RetryDetails, RetryPolicy, Runner

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from servers.mariadb import MariaDBServer

# Client-side bounds, so a broken scenario fails instead of hanging the suite.
CONNECT_ARGS: dict[str, Any] = {
    "ssl_disabled": True,  # a TLS context per connect costs ~50 ms; nothing to protect here
    "connect_timeout": 5,
    "read_timeout": 20,
    "write_timeout": 20,
}


@dataclass
class Database:
    """One database on a test server, looked at through the server's admin connection."""

    server: MariaDBServer
    name: str

    @property
    def url(self) -> str:
        return self.server.url(self.name)

    def query(self, sql: str, params: Sequence[object] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement as admin with this database as the default schema."""
        return self.server.admin(sql.replace("{db}", f"`{self.name}`"), params)

    def task_names(self) -> list[str]:
        return [row[0] for row in self.query("SELECT name FROM {db}.tasks ORDER BY name")]

    def counters(self) -> dict[str, int]:
        return dict(self.query("SELECT name, value FROM {db}.counters"))

    def connection_alive(self, connection_id: int) -> bool:
        rows = self.query(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s", [connection_id]
        )
        return bool(rows[0][0])

    def wait_connection_gone(self, connection_id: int, timeout: float = 10.0) -> float:
        """Wait until the server has dropped a connection; return how long that took."""
        started = time.monotonic()
        while self.connection_alive(connection_id):
            if time.monotonic() - started > timeout:
                pytest.fail(f"connection {connection_id} still open after {timeout} s")
            time.sleep(0.02)
        return time.monotonic() - started

    def raw_connection(self, **kwargs: Any) -> Any:
        """A plain PyMySQL connection as the app user over TCP (no SQLAlchemy, no pool)."""
        url = make_url(self.url)
        return pymysql.connect(
            host=url.host,
            port=url.port,
            user=url.username,
            password=url.password,
            database=self.name,
            ssl_disabled=True,
            connect_timeout=5,
            read_timeout=20,
            **kwargs,
        )


def with_schema(server: MariaDBServer, name: str) -> Database:
    database = Database(server, name)
    engine = sa.create_engine(database.url, poolclass=NullPool, connect_args=CONNECT_ARGS)
    try:
        Base.metadata.create_all(engine)
    finally:
        engine.dispose()
    return database


class Recorder:
    """A retry hook keeping every record it is given (thread-safe)."""

    def __init__(self) -> None:
        self.records: list[RetryDetails] = []
        self._lock = threading.Lock()

    def __call__(self, details: RetryDetails, /) -> None:
        with self._lock:
            self.records.append(details)

    @property
    def retries(self) -> list[RetryDetails]:
        return [record for record in self.records if record.will_retry]


def make_runner(
    engine: Engine, policy: RetryPolicy, *hooks: Callable[[RetryDetails], None]
) -> Runner[Any]:
    """A runner with the tasks and counters repositories."""
    return SqlAlchemyUnitOfWork.factory(
        engine, repositories=REPOSITORIES, policy=policy, hooks=hooks
    )


FAST_POLICY = RetryPolicy(
    attempts=3,
    timeout=10,
    wait_initial=0.01,
    wait_max=0.05,
    failover=KindPolicy(wait_initial=0.01),
)
"""Small waits and a bounded budget: transient failures rerun at once, the suite stays fast."""


class Threads:
    """Run callables in threads; keep their results, errors and durations by key."""

    def __init__(self) -> None:
        self.results: dict[str, object] = {}
        self.errors: dict[str, BaseException] = {}
        self.durations: dict[str, float] = {}
        self._threads: list[threading.Thread] = []

    def start(self, key: str, fn: Callable[[], object]) -> None:
        def target() -> None:
            started = time.monotonic()
            try:
                self.results[key] = fn()
            except BaseException as error:  # reported by the test, not by the thread
                self.errors[key] = error
            finally:
                self.durations[key] = time.monotonic() - started

        thread = threading.Thread(target=target, name=f"op-{key}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        alive = [thread.name for thread in self._threads if thread.is_alive()]
        if alive:
            pytest.fail(f"threads still running after {timeout} s: {alive}")
