"""Fixtures of the driver matrix: one runner-making helper per MySQL driver, sync or async.

Every scenario is written once, as a *body* ``body(attempt, session)`` working on a sync
``Session``. The sync drivers run it through ``SqlAlchemyUnitOfWork.factory``; the async
ones through ``AsyncSqlAlchemyUnitOfWork.factory`` and ``AsyncSession.run_sync``, so
that the driver's I/O is awaited on the event loop exactly as in an async application.
Every check of what reached the database goes through the server's admin connection.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pymysql  # type: ignore[import-untyped, unused-ignore]
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from adapters.sqlalchemy import (
    AsyncSqlAlchemyUnitOfWork,
    SqlAlchemyUnitOfWork,
    create_commit_marker_table,
    create_engine,
)
from servers.mariadb import MariaDBServer, ensure_mariadb_installed
from uow import RetryDetails, RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from sqlalchemy.orm import Session

T = TypeVar("T")

SETTLE_TIMEOUT = 10.0
"""Seconds any wait of a test for the server (a connection gone, a lock wait) may take."""
QUICK = RetryPolicy(timeout=10, wait_initial=0.01, wait_max=0.05)
"""Reruns at once; the budget bounds a scenario that goes wrong."""


@dataclass(frozen=True)
class DriverCase:
    """One driver: its URL scheme, the module its errors come from, and whether it is async."""

    name: str
    """The name of the extra that installs it (``retrying-uow[name]``)."""
    scheme: str
    errors: str
    """The module whose ``IntegrityError``, ``ProgrammingError`` ... the driver raises."""
    is_async: bool = False

    @property
    def dbapi(self) -> Any:
        """The module of the driver's exceptions (importing it: a missing driver fails)."""
        return importlib.import_module(self.errors)


DRIVERS = (
    DriverCase("pymysql", "mysql+pymysql", "pymysql.err"),
    DriverCase("mysqlclient", "mysql+mysqldb", "MySQLdb"),
    DriverCase("mysql-connector", "mysql+mysqlconnector", "mysql.connector.errors"),
    DriverCase("mariadb", "mysql+mariadbconnector", "mariadb"),
    DriverCase("asyncmy", "mysql+asyncmy", "asyncmy.errors", is_async=True),
    DriverCase("aiomysql", "mysql+aiomysql", "pymysql.err", is_async=True),
)
BY_NAME = {case.name: case for case in DRIVERS}


@pytest.fixture(params=DRIVERS, ids=[case.name for case in DRIVERS])
def driver(request: pytest.FixtureRequest) -> DriverCase:
    """Each of the six drivers in turn; one that does not import fails the test."""
    case: DriverCase = request.param
    case.dbapi  # noqa: B018 -- the import is the check
    return case


# --- the database ------------------------------------------------------------------------


@dataclass
class Database:
    """One database of the test's own, with the scenario tables, seen as admin.

    Its admin connection (the server's unix socket, autocommit) is opened once and
    pinged before each use, so that it survives a restart of the server.
    """

    server: MariaDBServer
    name: str
    admin: Any = field(default=None, repr=False)

    def url(
        self, driver: DriverCase, *, port: int | None = None, password: str | None = None
    ) -> str:
        url = make_url(self.server.url(self.name, driver=driver.scheme, port=port))
        if password is not None:
            url = url.set(password=password)
        return url.render_as_string(hide_password=False)

    def query(self, sql: str, params: Sequence[object] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement as admin, ``{db}`` standing for the quoted database name."""
        if self.admin is not None:
            try:
                self.admin.ping(reconnect=False)
            except pymysql.err.Error:  # the server was restarted under it
                self.admin.close()
                self.admin = None
        if self.admin is None:
            self.admin = self.server._admin_connect(
                autocommit=True, ssl_disabled=True, connect_timeout=5, read_timeout=SETTLE_TIMEOUT
            )
        with self.admin.cursor() as cursor:
            cursor.execute(sql.replace("{db}", f"`{self.name}`"), params)
            return [tuple(row) for row in cursor.fetchall()]

    def create(self) -> Database:
        self.query("CREATE DATABASE {db}")
        for host in ("127.0.0.1", "%"):
            self.query("GRANT ALL PRIVILEGES ON {db}.* TO %s@%s", [self.server.user, host])
        self.query(
            "CREATE TABLE {db}.items (id INT AUTO_INCREMENT PRIMARY KEY,"
            " name VARCHAR(64) NOT NULL, attempt INT NOT NULL, KEY ix_items_name (name))"
            " ENGINE=InnoDB"
        )
        self.query(
            "CREATE TABLE {db}.counters (name VARCHAR(16) PRIMARY KEY, value INT NOT NULL)"
            " ENGINE=InnoDB"
        )
        self.query("INSERT INTO {db}.counters VALUES ('a', 0), ('b', 0)")
        return self

    def drop(self) -> None:
        try:
            self.query("DROP DATABASE IF EXISTS {db}")
        finally:
            if self.admin is not None:
                self.admin.close()
                self.admin = None

    def items(self) -> list[tuple[str, int]]:
        """Every item row as (name, attempt that wrote it), in insertion order."""
        rows = self.query("SELECT name, attempt FROM {db}.items ORDER BY id")
        return [(str(name), int(attempt)) for name, attempt in rows]

    def counters(self) -> dict[str, int]:
        return {str(name): int(value) for name, value in self.query("SELECT * FROM {db}.counters")}

    def connection_alive(self, connection_id: int) -> bool:
        rows = self.query(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s", [connection_id]
        )
        return bool(rows[0][0])

    def wait_connection_gone(self, connection_id: int) -> None:
        wait_until(lambda: not self.connection_alive(connection_id), f"{connection_id} gone")

    def wait_lock_wait(self) -> None:
        """Wait until one transaction waits for a row lock.

        InnoDB refreshes ``INNODB_TRX`` only when it was not read for 0.1 s: polled more
        often, it would show the same snapshot for ever.
        """

        def waiting() -> bool:
            rows = self.query(
                "SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT'"
            )
            return int(rows[0][0]) == 1

        wait_until(waiting, "a transaction waiting for a row lock", interval=0.15)

    def other(self) -> Any:
        """A plain PyMySQL connection as the app user (another client's transaction)."""
        return pymysql.connect(
            host=self.server.host,
            port=self.server.port,
            user=self.server.user,
            password=self.server.password,
            database=self.name,
            ssl_disabled=True,
            connect_timeout=5,
            read_timeout=SETTLE_TIMEOUT,
            autocommit=False,
        )


def wait_until(
    predicate: Callable[[], bool],
    what: str,
    timeout: float = SETTLE_TIMEOUT,
    interval: float = 0.02,
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting after {timeout} s for {what}")
        time.sleep(interval)


def database_on(server: MariaDBServer) -> Iterator[Database]:
    database = Database(server, f"d_{uuid.uuid4().hex[:12]}")
    try:
        yield database.create()
    finally:
        database.drop()


@pytest.fixture
def db(mariadb: MariaDBServer) -> Iterator[Database]:
    """A database of the test's own on the shared server, with the scenario tables."""
    yield from database_on(mariadb)


@pytest.fixture
def private_db(private_mariadb: MariaDBServer) -> Iterator[Database]:
    """The scenario tables on a server of the test's own (free to crash and restart)."""
    yield from database_on(private_mariadb)


@pytest.fixture(scope="module")
def freezable_mariadb() -> Iterator[MariaDBServer]:
    """A server of this module's own, which its tests stop (SIGSTOP) and always resume."""
    ensure_mariadb_installed()
    server = MariaDBServer()
    try:
        server.start()
        yield server
    finally:
        resume(server)
        server.cleanup()


@pytest.fixture
def frozen_db(freezable_mariadb: MariaDBServer) -> Iterator[Database]:
    """A database of the test's own on the module's server that its tests stop."""
    database = Database(freezable_mariadb, f"d_{uuid.uuid4().hex[:12]}")
    try:
        yield database.create()
    finally:
        resume(freezable_mariadb)
        database.drop()


def freeze(server: MariaDBServer, *, thaw_after: float) -> threading.Timer:
    """Stop the server process; a timer resumes it after ``thaw_after`` s whatever happens.

    Returns once every thread of the server is stopped: ``kill()`` only queues the stop,
    and on a busy machine a thread may answer one more request before it takes effect.
    """
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    timer = threading.Timer(thaw_after, resume, [server])
    timer.daemon = True
    timer.start()
    wait_until(lambda: all_stopped(pid), f"every thread of {pid} stopped", timeout=thaw_after)
    return timer


def all_stopped(pid: int) -> bool:
    states = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread has just ended
            continue
        states.append(stat.rpartition(")")[2].split()[0])
    return all(state in {"T", "t"} for state in states)


def resume(server: MariaDBServer) -> None:
    pid = server.pid
    if pid is not None:
        os.kill(pid, signal.SIGCONT)


class LockCycle:
    """Another client's transaction that deadlocks with an attempt, and loses nothing.

    The attempt has locked counter 'a'; ``wait_for_a()`` makes the other transaction lock
    'b' and then wait for 'a', so that the attempt's next lock on 'b' closes the cycle.
    InnoDB rolls back the lighter transaction: the other one first writes a few ballast
    rows, so that the attempt is always the one rolled back. Once the attempt's locks are
    gone, the other transaction commits.
    """

    def __init__(self, db: Database) -> None:
        db.query("CREATE TABLE {db}.ballast (id INT AUTO_INCREMENT PRIMARY KEY) ENGINE=InnoDB")
        self.db = db
        self.other = db.other()
        self.outcome: list[BaseException | None] = []
        self._thread = threading.Thread(target=self._take_a_and_commit, daemon=True)

    def wait_for_a(self) -> None:
        with self.other.cursor() as cursor:
            cursor.execute("INSERT INTO ballast VALUES (), (), (), ()")
            cursor.execute("UPDATE counters SET value = value + 1 WHERE name = 'b'")
        self._thread.start()
        self.db.wait_lock_wait()

    def _take_a_and_commit(self) -> None:
        try:
            with self.other.cursor() as cursor:
                cursor.execute("UPDATE counters SET value = value + 1 WHERE name = 'a'")
            self.other.commit()
        except BaseException as error:  # reported by the test
            self.outcome.append(error)
        else:
            self.outcome.append(None)

    def finish(self) -> list[BaseException | None]:
        """Wait for the other transaction; return its outcome (``[None]``: it committed)."""
        try:
            if self._thread.is_alive():
                self._thread.join(SETTLE_TIMEOUT)
        finally:
            self.other.close()
        return self.outcome


# --- runners -------------------------------------------------------------------------------


class Recorder:
    """A retry hook keeping every record it is given, with optional reactions."""

    def __init__(self) -> None:
        self.records: list[RetryDetails] = []
        self.on_retry: list[Callable[[RetryDetails], None]] = []

    def __call__(self, details: RetryDetails, /) -> None:
        self.records.append(details)
        if details.will_retry:
            for react in self.on_retry:
                react(details)


@dataclass
class Units:
    """A runner on one driver, sync or async, that runs a scenario body in operations."""

    driver: DriverCase
    engine: sa.Engine | AsyncEngine
    runner: Any
    loop: asyncio.AbstractEventLoop | None
    recorder: Recorder = field(default_factory=Recorder)
    attempts: list[int] = field(default_factory=list)
    """The number of every attempt that ran the body, in order."""

    @property
    def records(self) -> list[RetryDetails]:
        return self.recorder.records

    def run(self, body: Callable[[int, Session], T], **options: Any) -> T:
        """Run ``body(attempt number, session)`` as one operation of the runner."""
        runner = self.runner.using(**options) if options else self.runner

        def step(number: int, session: Session) -> T:
            self.attempts.append(number)
            return body(number, session)

        if self.loop is None:

            def operation(uow: Any) -> T:
                return step(uow.attempt.number, uow.session)

            operation.__qualname__ = body.__qualname__
            return runner.run(operation)  # type: ignore[no-any-return]

        async def async_operation(uow: Any) -> T:
            result: T = await uow.session.run_sync(lambda s: step(uow.attempt.number, s))
            return result

        async_operation.__qualname__ = body.__qualname__
        return self.loop.run_until_complete(runner.run(async_operation))  # type: ignore[no-any-return]

    def dispose(self) -> None:
        if isinstance(self.engine, AsyncEngine):
            assert self.loop is not None
            self.loop.run_until_complete(self.engine.dispose())
        else:
            self.engine.dispose()


@pytest.fixture
def make_units(driver: DriverCase) -> Iterator[Callable[..., Units]]:
    """Make runners on ``driver``: ``make_units(url, policy=..., connect_args=...)``.

    Sync drivers get ``adapters.sqlalchemy.create_engine`` (its reset at check-in asks the
    driver whether a transaction is open), async ones SQLAlchemy's ``create_async_engine``;
    every engine is disposed at the end.
    """
    made: list[Units] = []
    loop = asyncio.new_event_loop() if driver.is_async else None

    def make(
        url: str,
        *,
        policy: RetryPolicy = QUICK,
        commit_markers: bool = False,
        connect_args: dict[str, Any] | None = None,
        **engine_options: Any,
    ) -> Units:
        args = dict(connect_args or {})
        recorder = Recorder()
        if commit_markers:
            marker_engine = sa.create_engine(
                make_url(url).set(drivername="mysql+pymysql"), poolclass=NullPool
            )
            try:
                create_commit_marker_table(marker_engine)
            finally:
                marker_engine.dispose()
        engine: sa.Engine | AsyncEngine
        if loop is None:
            engine = create_engine(url, connect_args=args, **engine_options)
            runner: Any = SqlAlchemyUnitOfWork.factory(
                engine, policy=policy, hooks=[recorder], commit_markers=commit_markers
            )
        else:
            engine = create_async_engine(url, connect_args=args, **engine_options)
            runner = AsyncSqlAlchemyUnitOfWork.factory(
                engine, policy=policy, hooks=[recorder], commit_markers=commit_markers
            )
        units = Units(driver, engine, runner, loop, recorder)
        made.append(units)
        return units

    try:
        yield make
    finally:
        for units in made:
            units.dispose()
        if loop is not None:
            loop.close()


def connection_id(session: Session) -> int:
    return int(session.execute(sa.text("SELECT CONNECTION_ID()")).scalar_one())


def insert_item(session: Session, name: str, attempt: int) -> None:
    session.execute(
        sa.text("INSERT INTO items (name, attempt) VALUES (:name, :attempt)"),
        {"name": name, "attempt": attempt},
    )


def bump(session: Session, counter: str) -> None:
    session.execute(
        sa.text("UPDATE counters SET value = value + 1 WHERE name = :name"), {"name": counter}
    )
