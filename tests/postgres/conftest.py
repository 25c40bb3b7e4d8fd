"""Fixtures of the PostgreSQL tests: databases with the schema, engines and runners per driver.

Every test that runs operations does so for psycopg (sync runner) and asyncpg (async
runner, ``AsyncSqlAlchemyUnitOfWork.factory(create_async_engine(...))``) alike: the
``flavour`` fixture hides the difference. Operation bodies are written once, against a
sync ``Session``; the async runner runs them through ``AsyncSession.run_sync`` (the
same greenlet bridge the async adapter itself uses). Checks of what reached the
database go through the server's admin socket, never through the engine under test.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from adapters.sqlalchemy import (
    MARKER_TABLE,
    AsyncSqlAlchemyUnitOfWork,
    SqlAlchemyUnitOfWork,
    commit_marker_ddl,
    create_engine,
)
from uow import RetryDetails, RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session

    from servers.postgres import PostgresServer

FAST = RetryPolicy(timeout=20, wait_initial=0.01, wait_max=0.2, retry_budget=None)
"""Quick backoff, a generous budget, no process-wide retry cap (tests fail on purpose)."""
SCHEMA = (
    "CREATE TABLE entries (id BIGSERIAL PRIMARY KEY, op_key TEXT NOT NULL, attempt INT NOT NULL)",
    "CREATE INDEX ix_entries_op_key ON entries (op_key)",  # not unique: duplicates show
    "CREATE TABLE counter (id INT PRIMARY KEY, n BIGINT NOT NULL)",
    "INSERT INTO counter VALUES (1, 0)",
    "CREATE TABLE tags (name TEXT PRIMARY KEY)",
)
DRIVERS = ("psycopg", "asyncpg")
ALL_DRIVERS = pytest.mark.parametrize(
    "flavour", ["psycopg", "psycopg_async", "asyncpg"], indirect=True
)
"""For the tests that also run with psycopg's async connection (and the async runner)."""


@dataclass
class Recorder:
    """A retry hook keeping every record (thread-safe enough: appends only)."""

    records: list[RetryDetails] = field(default_factory=list)

    def __call__(self, details: RetryDetails, /) -> None:
        self.records.append(details)

    @property
    def kinds(self) -> list[str]:
        return [record.kind.value for record in self.records]


@dataclass
class Database:
    """A database of the test's own on a server, checked through the admin socket."""

    server: PostgresServer
    name: str

    def url(
        self, driver: str = "psycopg", *, host: str | None = None, port: int | None = None
    ) -> str:
        return self.server.url(self.name, driver=driver, host=host, port=port)

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run a statement as the superuser (autocommit); return its rows."""
        return self.server.admin(sql, params, database=self.name)

    def as_app(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run a statement as the app role (tables it creates are the app's)."""
        return self.server.query(sql, params, database=self.name)

    def create_marker_table(self) -> None:
        """Create the commit-marker table as the app role (as a migration would)."""
        for statement in commit_marker_ddl(postgresql.dialect()):  # type: ignore[no-untyped-call]  # SQLAlchemy leaves it unannotated
            self.as_app(statement)

    def markers(self) -> int:
        return int(self.query(f"SELECT count(*) FROM {MARKER_TABLE}")[0][0])

    def entries(self) -> dict[str, int]:
        rows = self.query("SELECT op_key, count(*) FROM entries GROUP BY op_key")
        return {str(key): int(count) for key, count in rows}

    def counter(self) -> int:
        return int(self.query("SELECT n FROM counter WHERE id = 1")[0][0])


def with_schema(server: PostgresServer, name: str) -> Database:
    for statement in SCHEMA:
        server.query(statement, database=name)
    return Database(server, name)


@dataclass
class Flavour:
    """One driver and the runner that goes with it: psycopg (sync) or asyncpg (async).

    The async flavour keeps one event loop for the whole test: asyncpg connections
    belong to the loop that made them.
    """

    driver: str
    engines: list[Engine | AsyncEngine] = field(default_factory=list)
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)

    @property
    def is_async(self) -> bool:
        return self.driver != "psycopg"

    def engine(self, url: str, **kwargs: Any) -> Engine | AsyncEngine:
        """A lean engine (psycopg) or an AsyncEngine (the async drivers), disposed at the end."""
        made: Engine | AsyncEngine
        made = create_async_engine(url, **kwargs) if self.is_async else create_engine(url, **kwargs)
        self.engines.append(made)
        return made

    def runner(self, engine: Engine | AsyncEngine, **options: Any) -> Any:
        options.setdefault("policy", FAST)
        if isinstance(engine, AsyncEngine):
            return AsyncSqlAlchemyUnitOfWork.factory(engine, **options)
        return SqlAlchemyUnitOfWork.factory(engine, **options)

    def operation(self, body: Callable[..., Any]) -> Callable[..., Any]:
        """``body(session, uow, *args)`` as an operation of this flavour's runner."""
        return _async_operation(body) if self.is_async else _sync_operation(body)

    def run(self, runner: Any, body: Callable[..., Any], *args: Any) -> Any:
        """Run ``body(session, uow, *args)`` as one operation; async runners through run_sync."""
        if not self.is_async:
            return runner.run(_sync_operation(body), *args)
        return self.loop.run_until_complete(runner.run(_async_operation(body), *args))

    def run_together(
        self, runner: Any, body: Callable[..., Any], argument_lists: list[tuple[Any, ...]]
    ) -> list[Any]:
        """Run one operation per argument list concurrently (threads, or asyncio tasks).

        Each result is the operation's return value or the exception it raised.
        """
        if self.is_async:

            async def together() -> list[Any]:
                calls = [runner.run(_async_operation(body), *args) for args in argument_lists]
                return list(await asyncio.gather(*calls, return_exceptions=True))

            return self.loop.run_until_complete(together())
        results: list[Any] = [None] * len(argument_lists)

        def call(index: int, args: tuple[Any, ...]) -> None:
            try:
                results[index] = runner.run(_sync_operation(body), *args)
            except Exception as error:
                results[index] = error

        threads = [
            threading.Thread(target=call, args=(index, args), daemon=True)
            for index, args in enumerate(argument_lists)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        return results

    def await_(self, value: Any) -> Any:
        """The value, awaited on the flavour's loop if it is awaitable (a dispose, say)."""
        if inspect.isawaitable(value):
            return self.loop.run_until_complete(value)
        return value

    def dispose(self) -> None:
        for engine in self.engines:
            self.await_(engine.dispose())
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


def _sync_operation(body: Callable[..., Any]) -> Callable[..., Any]:
    def operation(uow: Any, *args: Any) -> Any:
        return body(uow.session, uow, *args)

    operation.__qualname__ = body.__qualname__
    return operation


def _async_operation(body: Callable[..., Any]) -> Callable[..., Any]:
    async def operation(uow: Any, *args: Any) -> Any:
        def inside(session: Session) -> Any:
            return body(session, uow, *args)

        return await uow.session.run_sync(inside)

    operation.__qualname__ = body.__qualname__
    return operation


@pytest.fixture(params=DRIVERS)
def flavour(request: pytest.FixtureRequest) -> Iterator[Flavour]:
    """psycopg with the sync runner, then asyncpg (or psycopg_async) with the async runner."""
    made = Flavour(request.param)
    try:
        yield made
    finally:
        made.dispose()


@pytest.fixture
def db(postgres: PostgresServer) -> Iterator[Database]:
    """A fresh database with the entries, counter and tags tables on the shared server."""
    name = postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
    try:
        yield with_schema(postgres, name)
    finally:
        postgres.drop_database(name)


@pytest.fixture
def private_db(private_postgres: PostgresServer) -> Database:
    """The schema in a database on a server of the test's own (free to kill and restart)."""
    name = private_postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
    return with_schema(private_postgres, name)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def place(session: Session, uow: Any, key: str) -> int:
    """The operation most tests run: insert an entry, bump the counter; returns the attempt."""
    session.execute(
        text("INSERT INTO entries (op_key, attempt) VALUES (:key, :attempt)"),
        {"key": key, "attempt": uow.attempt.number},
    )
    session.execute(text("UPDATE counter SET n = n + 1 WHERE id = 1"))
    number: int = uow.attempt.number
    return number
