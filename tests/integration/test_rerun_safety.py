"""Fault injection through SQLAlchemy and the rerun-safety check, on SQLite and on MariaDB.

The faults go through SQLAlchemy's own error handling (the adapter raises the driver's own
error where the statement would run): the tests check that what comes out is what a real
lost connection, deadlock or lost COMMIT gives.
"""

from __future__ import annotations

import gc
import sqlite3
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pymysql  # type: ignore[import-untyped, unused-ignore]
import pytest
import sqlalchemy as sa
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.pool import NullPool

from adapters.sqlalchemy import SqlAlchemyBackend, SqlAlchemyUnitOfWork, create_commit_marker_table
from tests.integration.helpers import CONNECT_ARGS, FAST_POLICY, Recorder
from tests.integration.model import REPOSITORIES, Base, Counter, Task
from uow import AttemptInfo, CommitOutcomeUnknown, ErrorKind, Runner, retry_details
from uow.testing import Fault, check_rerun_safety, inject, set_testing

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from sqlalchemy.engine import Engine

    from tests.integration.helpers import Database

LOST = (2013, "Lost connection to MySQL server during query")


@dataclass
class Target:
    """An engine under test on a database with the schema, and a separate look at its rows."""

    dialect: str
    engine: Engine
    inspector: Engine
    recorder: Recorder = field(default_factory=Recorder)
    invalidated: list[BaseException | None] = field(default_factory=list)
    outbox: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        event.listen(self.engine, "invalidate", lambda _c, _r, e: self.invalidated.append(e))

    def runner(self, **kwargs: Any) -> Runner[Any]:
        return SqlAlchemyUnitOfWork.factory(
            self.engine,
            repositories=REPOSITORIES,
            policy=FAST_POLICY,
            hooks=[self.recorder],
            **kwargs,
        )

    def restore(self) -> None:
        """The fixture: no task, the counter at 0, an empty outbox."""
        self.outbox.clear()
        with self.inspector.begin() as connection:
            connection.execute(sa.delete(Task))
            connection.execute(sa.delete(Counter))
            connection.execute(sa.insert(Counter).values(name="hits", value=0))

    def snapshot(self) -> tuple[list[str], dict[str, int]]:
        """Task names and counters: what matters, without auto-increment ids."""
        with self.inspector.connect() as connection:
            names = list(connection.scalars(sa.select(Task.name).order_by(Task.name)))
            counters = connection.execute(sa.select(Counter.name, Counter.value)).all()
        return names, dict(counters)

    def check(self, runner: Runner[Any], operation: Any, *args: Any) -> Any:
        return check_rerun_safety(
            runner,
            operation,
            *args,
            snapshot=self.snapshot,
            restore=self.restore,
            side_effects=lambda: list(self.outbox),
        )


def sqlite_target(tmp_path: Path) -> Iterator[Target]:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    engine = sa.create_engine(url)
    Base.metadata.create_all(engine)
    inspector = sa.create_engine(url, poolclass=NullPool)
    yield Target("sqlite", engine, inspector)
    engine.dispose()
    inspector.dispose()


def mariadb_target(db: Database, make_engine: Callable[..., Engine]) -> Iterator[Target]:
    inspector = sa.create_engine(db.url, poolclass=NullPool, connect_args=CONNECT_ARGS)
    yield Target("mysql", make_engine(db.url), inspector)
    inspector.dispose()


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.integration)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """The same tests on a SQLite file and on the throwaway MariaDB server."""
    if request.param == "sqlite":
        yield from sqlite_target(tmp_path)
    else:
        db = request.getfixturevalue("db")
        yield from mariadb_target(db, request.getfixturevalue("make_engine"))


@pytest.fixture
def sqlite_only(tmp_path: Path) -> Iterator[Target]:
    yield from sqlite_target(tmp_path)


@pytest.fixture
def mariadb_only(request: pytest.FixtureRequest) -> Iterator[Target]:
    db = request.getfixturevalue("db")
    yield from mariadb_target(db, request.getfixturevalue("make_engine"))


@pytest.fixture(autouse=True)
def _instant() -> Iterator[None]:
    with set_testing(True):
        yield


# The operations: three statements each (the INSERT autoflushed by the locking read, the
# read, the UPDATE flushed before COMMIT).


def register(uow: Any, name: str) -> str:
    """Safe: every write goes through the unit of work."""
    uow.tasks.add(Task(name=name))
    uow.counters.locked("hits").value += 1
    return name


def register_with(target: Target) -> Callable[[Any, str], str]:
    def register_and_mail(uow: Any, name: str) -> str:
        """Unsafe: mail sent from inside the unit of work goes out once per attempt."""
        uow.tasks.add(Task(name=name))
        target.outbox.append(f"welcome {name}")
        uow.counters.locked("hits").value += 1
        return name

    return register_and_mail


class CachedHits:
    """Unsafe: a counter read before the transaction, incremented in memory per attempt."""

    def __init__(self) -> None:
        self.hits = 0

    def bump(self, uow: Any) -> int:
        self.hits += 1
        uow.tasks.add(Task(name="bump"))
        uow.counters.locked("hits").value = self.hits
        return self.hits


# --- the rerun-safety check ---------------------------------------------------------------


def test_check_passes_a_safe_operation(target: Target) -> None:
    """Faults at each of the 3 statements rerun to the same rows; lost COMMITs stay unknown."""
    report = target.check(target.runner(), register, "a")
    assert report.safe, str(report)
    assert report.statements == 3
    assert [(str(f.fault), f.verdict, f.attempts) for f in report.findings] == [
        ("disconnect (2013) at statement 1", "safe", 2),
        ("disconnect (2013) at statement 2", "safe", 2),
        ("disconnect (2013) at statement 3", "safe", 2),
        ("lost COMMIT (2013), not applied", "unresolved", 1),
        ("lost COMMIT (2013), applied", "unresolved", 1),
    ]
    assert target.snapshot() == ([], {"hits": 0})  # the starting state is back


def test_commit_markers_make_lost_commits_safe(target: Target) -> None:
    """With commit markers, both lost COMMITs are resolved: same rows, same result."""
    create_commit_marker_table(target.engine)
    report = target.check(target.runner(commit_markers=True), register, "a")
    assert report.safe, str(report)
    assert report.statements == 4  # the marker's INSERT is the last statement
    assert [f.verdict for f in report.findings] == ["safe"] * 6
    assert [f.attempts for f in report.findings[-2:]] == [2, 1]  # rerun / found committed


def test_check_flags_mail_sent_inside_the_unit_of_work(target: Target) -> None:
    """Every fault after the mail went out reruns it: all three statements are flagged."""
    report = target.check(target.runner(commit_markers=False), register_with(target), "a")
    assert [f.fault.at for f in report.unsafe] == [1, 2, 3]
    assert report.unsafe[0].differences == (
        "side effects: expected ['welcome a'], got ['welcome a', 'welcome a']",
    )
    assert "3 UNSAFE" in str(report)
    with pytest.raises(AssertionError, match=r"UNSAFE +disconnect \(2013\) at statement 2"):
        report.assert_safe()


def test_check_flags_a_counter_read_before_the_transaction(target: Target) -> None:
    """A value kept in memory and incremented per attempt writes 2 where the clean run wrote 1."""
    cache = CachedHits()

    def restore() -> None:
        target.restore()
        cache.hits = 0

    report = check_rerun_safety(
        target.runner(), cache.bump, snapshot=target.snapshot, restore=restore
    )
    assert [f.fault.at for f in report.unsafe] == [1, 2, 3]
    assert report.unsafe[0].differences == (
        "result: expected 1, got 2",
        "state: expected (['bump'], {'hits': 1}), got (['bump'], {'hits': 2})",
    )


# --- what a fault looks like ----------------------------------------------------------------


def test_lost_connection_is_the_drivers_error_wrapped_and_invalidated(target: Target) -> None:
    """Exhausted retries give back SQLAlchemy's error on the driver's, connection invalidated."""
    target.restore()
    with (
        pytest.raises((OperationalError, ProgrammingError)) as excinfo,
        inject(Fault.disconnect(at=2, times=3)),
    ):
        target.runner().run(register, "a")
    error = excinfo.value
    assert error.connection_invalidated
    if target.dialect == "mysql":
        assert isinstance(error, OperationalError)
        assert error.orig is not None
        assert type(error.orig) is pymysql.err.OperationalError
        assert error.orig.args == LOST
    else:
        assert isinstance(error, ProgrammingError)
        assert type(error.orig) is sqlite3.ProgrammingError
        assert str(error.orig) == "Cannot operate on a closed database."
    details = retry_details(error)
    assert details is not None
    assert (details.attempt, details.kind, details.reason) == (
        3,
        ErrorKind.DISCONNECT,
        "attempts exhausted",
    )
    assert [r.will_retry for r in target.recorder.records] == [True, True, False]
    assert len(target.invalidated) == 3
    assert target.snapshot() == ([], {"hits": 0})


def test_one_lost_connection_costs_one_attempt(target: Target) -> None:
    """A single fault is retried once and the operation writes exactly once."""
    target.restore()
    with inject(Fault.disconnect(at=3)) as injection:
        assert target.runner().run(register, "a") == "a"
    assert injection.attempts("register") == 2
    assert [(p.attempt, p.at) for p in injection.points][-4:] == [
        (2, 1),
        (2, 2),
        (2, 3),
        (2, "commit"),
    ]
    assert target.snapshot() == (["a"], {"hits": 1})


@pytest.mark.integration
def test_lost_connection_really_closes_the_servers_connection(
    mariadb_only: Target, db: Database
) -> None:
    """The invalidated connection is closed: the server drops it and its transaction."""
    target = mariadb_only
    target.restore()
    ids: list[int] = []

    def register_noting_the_connection(uow: Any, name: str) -> str:
        ids.append(int(uow.session.execute(text("SELECT CONNECTION_ID()")).scalar_one()))
        return register(uow, name)

    with inject(Fault.disconnect(at=3)):
        target.runner().run(register_noting_the_connection, "a")
    db.wait_connection_gone(ids[0])
    assert ids[0] != ids[1]
    assert target.snapshot() == (["a"], {"hits": 1})


@pytest.mark.integration
@pytest.mark.parametrize(
    ("fault", "kind", "errno"),
    [
        (Fault.deadlock(at=2), ErrorKind.DEADLOCK, 1213),
        (Fault.lock_wait(at=2), ErrorKind.LOCK_WAIT, 1205),
        (Fault.deadlock(at="commit"), ErrorKind.DEADLOCK, 1213),
    ],
    ids=str,
)
def test_lock_conflicts_keep_the_connection(
    mariadb_only: Target, fault: Fault, kind: ErrorKind, errno: int
) -> None:
    """A deadlock or lock wait is the server's answer: classified by errno, connection kept."""
    target = mariadb_only
    target.restore()
    with inject(fault):
        target.runner().run(register, "a")
    [record] = target.recorder.records
    assert (record.kind, record.errno, record.will_retry) == (kind, errno, True)
    assert isinstance(record.error, OperationalError)
    assert not record.error.connection_invalidated
    assert target.invalidated == []
    assert target.snapshot() == (["a"], {"hits": 1})


@pytest.mark.parametrize("committed", [True, False])
def test_lost_commit_reports_the_unknown_outcome_with_the_real_one_behind(
    target: Target, committed: bool
) -> None:
    """By default a lost COMMIT raises CommitOutcomeUnknown; the rows are there iff applied."""
    target.restore()
    with (
        pytest.raises(CommitOutcomeUnknown) as excinfo,
        inject(Fault.lost_commit(committed=committed)),
    ):
        target.runner().run(register, "a")
    cause = excinfo.value.__cause__
    assert isinstance(cause, (OperationalError, ProgrammingError))
    assert cause.connection_invalidated
    assert target.snapshot() == ((["a"], {"hits": 1}) if committed else ([], {"hits": 0}))


@pytest.mark.parametrize("committed", [True, False])
def test_lost_commit_resolved_by_markers_writes_once(target: Target, committed: bool) -> None:
    """With markers, an applied lost COMMIT returns its result; an unapplied one reruns."""
    create_commit_marker_table(target.engine)
    target.restore()
    with inject(Fault.lost_commit(committed=committed)) as injection:
        assert target.runner(commit_markers=True).run(register, "a") == "a"
    assert injection.attempts("register") == (1 if committed else 2)
    assert target.snapshot() == (["a"], {"hits": 1})


def test_sqlite_cannot_simulate_a_deadlock(sqlite_only: Target) -> None:
    """SQLite has no deadlock errno the generic classification retries: a clear error."""
    target = sqlite_only
    target.restore()
    with (
        pytest.raises(NotImplementedError, match="cannot be simulated on sqlite"),
        inject(Fault.deadlock(at=1)),
    ):
        target.runner().run(register, "a")


# --- found on the way ------------------------------------------------------------------------


def test_every_new_backend_gets_the_attempt_listeners() -> None:
    """Each new SqlAlchemyBackend's attempts run the adapter's listeners (errors are tracked)."""
    engine = sa.create_engine("sqlite://")
    try:
        for number in range(1, 301):
            backend = SqlAlchemyBackend(engine)
            transaction = backend.begin(AttemptInfo("op", 1, time.monotonic() + 10))
            session = transaction.session
            with pytest.raises(sa.exc.OperationalError, match="no such table"):
                session.execute(text("SELECT * FROM missing"))  # an error the code swallows
            tracked = len(transaction.errors)
            transaction.rollback()
            transaction.close()
            del backend, transaction, session
            gc.collect()
            assert tracked == 1, f"backend {number}: the adapter's listeners did not run"
    finally:
        engine.dispose()
