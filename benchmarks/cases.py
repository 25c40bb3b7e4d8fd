"""The benchmark cases: one operation each, built on an engine of its own."""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy
from sqlalchemy.orm import Session

from adapters.sqlalchemy import SqlAlchemyUnitOfWork, create_commit_marker_table, create_engine
from benchmarks.model import (
    INSERT_ITEM,
    RAW_INSERT,
    REPOSITORIES,
    SEED_ROWS,
    Item,
    read_one,
    reset_schema,
    write_one,
    write_ten,
)
from benchmarks.server import NO_TLS

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Self

    from sqlalchemy.engine import Engine

    from benchmarks.server import Database

MARIADB = "mariadb"
SQLITE = "sqlite"


@dataclass(frozen=True)
class Case:
    name: str
    db: str
    summary: str
    build: Callable[[Builder], Callable[[], object]]


@dataclass(frozen=True)
class Comparison:
    """A paired ratio: the case's time over the baseline's, round by round."""

    case: str
    baseline: str
    goal: float | None = None
    label: str = ""


class Builder:
    """Makes engines and connections for the cases, and closes them all at the end."""

    def __init__(self, db: Database | None) -> None:
        self.db = db
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def _url(self) -> str:
        if self.db is None:
            raise RuntimeError("this case needs MariaDB")
        return self.db.url

    def _keep(self, engine: Engine) -> Engine:
        self._stack.callback(engine.dispose)
        return engine

    def plain(self, **kwargs: Any) -> Engine:
        """An engine from ``sqlalchemy.create_engine``, TLS off."""
        return self._keep(sqlalchemy.create_engine(self._url(), connect_args=NO_TLS, **kwargs))

    def lean(self, **kwargs: Any) -> Engine:
        """An engine from ``adapters.sqlalchemy.create_engine``, TLS off."""
        return self._keep(create_engine(self._url(), connect_args=NO_TLS, **kwargs))

    def sqlite(self) -> Engine:
        """A lean engine on a SQLite database in memory, with the table and seed rows."""
        engine = self._keep(create_engine("sqlite://"))
        reset_schema(engine)
        return engine

    def sqlite_plain(self) -> Engine:
        """SQLAlchemy's own engine on a SQLite database in memory, with the table and seed rows."""
        engine = self._keep(sqlalchemy.create_engine("sqlite://"))
        reset_schema(engine)
        return engine

    def raw(self) -> Any:
        if self.db is None:
            raise RuntimeError("this case needs MariaDB")
        connection = self.db.connect(**NO_TLS)
        self._stack.callback(connection.close)
        return connection


def _ids() -> Callable[[], int]:
    counter = itertools.count()
    return lambda: next(counter) % SEED_ROWS + 1


def raw_pymysql(b: Builder) -> Callable[[], object]:
    connection = b.raw()

    def op() -> None:
        with connection.cursor() as cursor:
            cursor.execute(RAW_INSERT, ("one", 1))
        connection.commit()

    return op


def hand_session(engine: Engine) -> Callable[[], object]:
    def op() -> None:
        with Session(engine) as session:
            session.add(Item(name="one", qty=1))
            session.commit()

    return op


def seen(engine: Engine) -> Engine:
    """Return ``engine`` after a unit of work used it: its listeners are on the engine."""
    SqlAlchemyUnitOfWork.factory(engine, repositories=REPOSITORIES).run(write_one)
    return engine


def core_begin(engine: Engine) -> Callable[[], object]:
    def op() -> None:
        with engine.begin() as connection:
            connection.execute(INSERT_ITEM, {"name": "one", "qty": 1})

    return op


def uow_write(engine: Engine, **kwargs: Any) -> Callable[[], object]:
    units = SqlAlchemyUnitOfWork.factory(engine, repositories=REPOSITORIES, **kwargs)
    return lambda: units.run(write_one)


def uow_write_ten(engine: Engine) -> Callable[[], object]:
    units = SqlAlchemyUnitOfWork.factory(engine, repositories=REPOSITORIES)
    return lambda: units.run(write_ten)


def uow_read(engine: Engine) -> Callable[[], object]:
    units = SqlAlchemyUnitOfWork.factory(engine, repositories=REPOSITORIES)
    next_id = _ids()
    return lambda: units.run(read_one, next_id())


def uow_markers(b: Builder) -> Callable[[], object]:
    engine = b.lean()
    create_commit_marker_table(engine)
    return uow_write(engine, commit_markers=True)


CASES: tuple[Case, ...] = (
    Case("raw", MARIADB, "raw PyMySQL: INSERT + COMMIT on one connection (the floor)", raw_pymysql),
    Case(
        "session",
        MARIADB,
        "hand-written Session per op, plain engine",
        lambda b: hand_session(b.plain()),
    ),
    Case(
        "session_pre_ping",
        MARIADB,
        "hand-written Session per op, plain engine, pool_pre_ping",
        lambda b: hand_session(b.plain(pool_pre_ping=True)),
    ),
    Case(
        "session_lean",
        MARIADB,
        "hand-written Session per op, lean engine (equally configured)",
        lambda b: hand_session(b.lean()),
    ),
    Case(
        "session_seen",
        MARIADB,
        "hand-written Session per op, plain engine that a unit of work also uses",
        lambda b: hand_session(seen(b.plain())),
    ),
    Case(
        "core",
        MARIADB,
        "Core engine.begin() + insert, plain engine",
        lambda b: core_begin(b.plain()),
    ),
    Case(
        "core_seen",
        MARIADB,
        "Core engine.begin() + insert, plain engine that a unit of work also uses",
        lambda b: core_begin(seen(b.plain())),
    ),
    Case(
        "uow_write",
        MARIADB,
        "unit of work, one-row write, lean engine",
        lambda b: uow_write(b.lean()),
    ),
    Case(
        "uow_read",
        MARIADB,
        "unit of work, read by primary key, lean engine",
        lambda b: uow_read(b.lean()),
    ),
    Case(
        "uow_write10",
        MARIADB,
        "unit of work, 10-row write, lean engine",
        lambda b: uow_write_ten(b.lean()),
    ),
    Case(
        "uow_write_plain",
        MARIADB,
        "unit of work, one-row write, plain engine",
        lambda b: uow_write(b.plain()),
    ),
    Case(
        "uow_read_plain",
        MARIADB,
        "unit of work, read by primary key, plain engine",
        lambda b: uow_read(b.plain()),
    ),
    Case(
        "uow_write10_plain",
        MARIADB,
        "unit of work, 10-row write, plain engine",
        lambda b: uow_write_ten(b.plain()),
    ),
    Case(
        "uow_write_markers",
        MARIADB,
        "unit of work, one-row write, lean engine, commit markers",
        uow_markers,
    ),
    Case(
        "sqlite_session",
        SQLITE,
        "hand-written Session per op, SQLite memory, lean engine",
        lambda b: hand_session(b.sqlite()),
    ),
    Case(
        "sqlite_session_plain",
        SQLITE,
        "hand-written Session per op, SQLite memory, plain engine",
        lambda b: hand_session(b.sqlite_plain()),
    ),
    Case(
        "sqlite_session_seen",
        SQLITE,
        "hand-written Session per op, SQLite memory, plain engine that a unit of work also uses",
        lambda b: hand_session(seen(b.sqlite_plain())),
    ),
    Case(
        "sqlite_uow_write",
        SQLITE,
        "unit of work, one-row write, SQLite memory, lean engine",
        lambda b: uow_write(b.sqlite()),
    ),
)

COMPARISONS: tuple[Comparison, ...] = (
    Comparison("session", "session_pre_ping"),
    Comparison("session_lean", "session"),
    Comparison("core", "session"),
    Comparison("session_seen", "session", 1.02, "your own sessions on an engine it uses"),
    Comparison("core_seen", "core", 1.02, "your own connections on an engine it uses"),
    Comparison("uow_write", "session_lean", 1.03, "vs an equally configured hand-written session"),
    Comparison("uow_write", "session_pre_ping", 0.72, "vs the hand-written session with pre-ping"),
    Comparison("uow_read", "uow_read_plain"),
    Comparison("uow_write10", "uow_write10_plain"),
    Comparison("uow_write_plain", "session"),
    Comparison("uow_write_markers", "uow_write", 1.10, "commit markers on vs off"),
    Comparison("sqlite_uow_write", "sqlite_session", 1.10, "SQLite memory vs hand-written"),
    Comparison(
        "sqlite_session_seen",
        "sqlite_session_plain",
        1.02,
        "your own sessions on an engine it uses, SQLite memory",
    ),
)

STATEMENT_GOALS: tuple[tuple[str, str, float], ...] = (
    ("uow_write", "statements per one-row write", 2),
    ("uow_read", "statements per read by primary key", 2),
)
"""(case, label, most statements per op): round trips = Questions + Com_admin_commands."""
