"""Habits users bring from direct session use: each one works, or is refused before any write.

The block form used like any ``with``, transaction control by the operation's own code,
two runners, an ``async def``, a caught lost connection, a read-only operation: on a
real MariaDB, every case either ends with its writes committed exactly once or raises
at once with a clear error, never success with a write lost or made twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError, PendingRollbackError

from servers.mysql_proxy import AfterCommitReply, BeforeCommit, FaultProxy
from tests.integration.helpers import FAST_POLICY, make_runner
from tests.integration.model import Task
from uow import (
    BlockFormError,
    CommitOutcomeUnknown,
    ErrorKind,
    NestingError,
    TransactionControlError,
    retry_details,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy.engine import Engine

    from servers.mariadb import MariaDBServer
    from tests.integration.helpers import Database, Recorder
    from uow import Runner

pytestmark = pytest.mark.integration

CR_SERVER_LOST = 2013


@pytest.fixture
def proxy(mariadb: MariaDBServer, db: Database) -> Iterator[FaultProxy]:
    """A fault proxy in front of the shared server, stopped before the database is dropped."""
    del db
    with FaultProxy(mariadb.host, mariadb.port) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def units(db: Database, make_engine: Callable[..., Engine], recorder: Recorder) -> Runner[Any]:
    """A runner on the test database with small waits and a recording hook."""
    return make_runner(make_engine(db.url), FAST_POLICY, recorder)


def proxied_runner(
    db: Database, proxy: FaultProxy, make_engine: Callable[..., Engine], recorder: Recorder
) -> Runner[Any]:
    url = db.url.replace(f":{db.server.port}/", f":{proxy.port}/")
    return make_runner(make_engine(url), FAST_POLICY, recorder)


def connection_id(uow: Any) -> int:
    return int(uow.session.execute(text("SELECT CONNECTION_ID()")).scalar_one())


# --- 1. the block form ------------------------------------------------------------------


def return_inside_the_block(units: Runner[Any]) -> Task:
    for attempt in units.attempts("create"):
        with attempt as uow:
            task: Task = uow.tasks.add(Task(name="returned"))
            return task
    raise AssertionError  # pragma: no cover


def test_return_inside_the_block_form_is_refused_before_anything_runs(
    db: Database, units: Runner[Any]
) -> None:
    """`return` inside the loop is refused at once, with the line named: no row, no attempt."""
    with pytest.raises(BlockFormError, match=r"test_habits\.py:\d+: `return`"):
        return_inside_the_block(units)
    assert db.task_names() == []


def test_duplicate_key_at_the_blocks_flush_reaches_the_caller(
    db: Database, units: Runner[Any], recorder: Recorder
) -> None:
    """An IntegrityError raised by the flush at the end of the block is raised, not lost."""
    db.query("INSERT INTO {db}.tasks (name) VALUES ('taken')")
    def create() -> None:
        for attempt in units.attempts("create"):
            with attempt as uow:
                uow.tasks.add(Task(name="taken"))

    with pytest.raises(IntegrityError):
        create()
    assert db.task_names() == ["taken"]
    assert [r.reason for r in recorder.records] == ["not retryable"]


def test_lost_connection_at_the_blocks_flush_is_rerun(
    db: Database, units: Runner[Any], recorder: Recorder
) -> None:
    """A connection killed before the block's own flush is rerun by the loop: one row."""
    killed: list[int] = []
    for attempt in units.attempts("create"):
        with attempt as uow:
            if not killed:
                killed.append(connection_id(uow))
                db.query(f"KILL CONNECTION {killed[0]}")
            uow.tasks.add(Task(name="kept"))  # sent by the flush at the end of the block
    assert db.task_names() == ["kept"]
    assert [(r.attempt, r.errno, r.will_retry) for r in recorder.records] == [
        (1, CR_SERVER_LOST, True)
    ]


def test_lost_commit_in_the_block_form_reaches_the_caller(
    db: Database, proxy: FaultProxy, make_engine: Callable[..., Engine], recorder: Recorder
) -> None:
    """A COMMIT reply lost at the end of the block raises CommitOutcomeUnknown from the loop."""
    units = proxied_runner(db, proxy, make_engine, recorder)
    proxy.arm(AfterCommitReply())

    def create() -> None:
        for attempt in units.attempts("create"):
            with attempt as uow:
                uow.tasks.add(Task(name="applied"))

    with pytest.raises(CommitOutcomeUnknown):
        create()
    assert db.task_names() == ["applied"]  # it did commit: reported as unknown, never twice


def test_a_loop_that_never_enters_its_attempt_ends_at_once(
    db: Database, units: Runner[Any]
) -> None:
    """A loop body without `with attempt` raises BlockFormError instead of spinning."""
    iterations: list[object] = []

    def forget_the_with() -> None:
        for attempt in units.attempts("create"):
            iterations.append(attempt)  # noqa: PERF402 -- the loop under test

    with pytest.raises(BlockFormError, match="never entered"):
        forget_the_with()
    assert len(iterations) == 1
    assert db.task_names() == []


# --- 2. transaction control by the operation's code ---------------------------------------


def commit_half(uow: Any) -> None:
    uow.tasks.add(Task(name="first half"))
    uow.session.commit()
    uow.tasks.add(Task(name="second half"))


def get_or_create_with_rollback(uow: Any, name: str) -> Task:
    uow.tasks.add(Task(name="earlier write"))
    try:
        uow.tasks.add(Task(name=name))
        uow.session.flush()
    except IntegrityError:
        uow.session.rollback()  # the classic helper: drops "earlier write" too
        found: Task = uow.tasks.by_name(name)
        return found
    return uow.tasks.by_name(name)  # type: ignore[no-any-return]


def begin_block(uow: Any) -> None:
    with uow.session.begin():
        uow.tasks.add(Task(name="in begin"))


@pytest.mark.parametrize(
    ("operation", "call"),
    [
        (commit_half, "Session.commit()"),
        (functools.partial(get_or_create_with_rollback, name="taken"), "Session.rollback()"),
        (begin_block, "Session.begin()"),
        (lambda uow: uow.session.close(), "Session.close()"),
        (lambda uow: uow.session.connection().commit(), "Connection.commit()"),
    ],
    ids=["commit", "rollback", "begin", "close", "connection-commit"],
)
@pytest.mark.parametrize("markers", [False, True], ids=["plain", "markers"])
def test_session_transaction_control_is_refused_before_any_commit(  # noqa: PLR0917
    db: Database,
    make_engine: Callable[..., Engine],
    recorder: Recorder,
    operation: Callable[[Any], object],
    call: str,
    markers: bool,
) -> None:
    """commit/rollback/begin/close on the attempt's session raise naming the call; no commit."""
    from adapters.sqlalchemy import SqlAlchemyUnitOfWork, create_commit_marker_table  # noqa: PLC0415
    from tests.integration.model import REPOSITORIES  # noqa: PLC0415

    db.query("INSERT INTO {db}.tasks (name) VALUES ('taken')")
    engine = make_engine(db.url)
    if markers:
        create_commit_marker_table(engine)
    units = SqlAlchemyUnitOfWork.factory(
        engine, repositories=REPOSITORIES, policy=FAST_POLICY, hooks=[recorder],
        commit_markers=markers,
    )  # fmt: skip
    with pytest.raises(TransactionControlError, match=re.escape(call)):
        units.run(operation)
    assert db.task_names() == ["taken"]
    assert [r.attempt for r in recorder.records] == [1]  # refused, never rerun


@pytest.mark.parametrize(
    "statement",
    ["COMMIT", "ROLLBACK", "START TRANSACTION", "BEGIN", "SET autocommit = 1",
     "CREATE TABLE ddl_commits (id INT)", "TRUNCATE TABLE counters", "LOCK TABLES tasks WRITE"],
)  # fmt: skip
def test_raw_statements_that_end_the_transaction_are_refused(
    db: Database, units: Runner[Any], statement: str
) -> None:
    """COMMIT, ROLLBACK, BEGIN, autocommit, DDL: refused before they run; nothing commits."""

    def write_then(uow: Any) -> None:
        uow.tasks.add(Task(name="before"))
        uow.session.flush()
        uow.session.execute(text(statement))

    with pytest.raises(TransactionControlError, match=statement.split(maxsplit=1)[0]):
        units.run(write_then)
    assert db.task_names() == []
    assert db.query("SHOW TABLES FROM {db} LIKE 'ddl_commits'") == []


def test_savepoints_and_temporary_tables_stay_allowed(db: Database, units: Runner[Any]) -> None:
    """begin_nested() gives get-or-create its savepoint; temporary tables commit nothing."""
    db.query("INSERT INTO {db}.tasks (name) VALUES ('taken')")

    def get_or_create(uow: Any, name: str) -> Task:
        uow.tasks.add(Task(name="earlier write"))
        uow.session.execute(text("CREATE TEMPORARY TABLE scratch (id INT)"))
        try:
            with uow.begin_nested():
                uow.tasks.add(Task(name=name))
        except IntegrityError:
            pass
        found: Task = uow.tasks.by_name(name)
        return found

    assert units.run(get_or_create, "taken").name == "taken"
    assert db.task_names() == ["earlier write", "taken"]


# --- 3. two runners -----------------------------------------------------------------------


def test_a_second_runner_on_the_same_engine_joins_the_outer_operation(
    db: Database, make_engine: Callable[..., Engine], recorder: Recorder
) -> None:
    """Runner B inside runner A's operation shares its transaction: one connection, no wait."""
    db.query("INSERT INTO {db}.counters (name, value) VALUES ('c', 0)")
    engine = make_engine(db.url, init_command="SET SESSION innodb_lock_wait_timeout=5")
    outer = make_runner(engine, FAST_POLICY, recorder)
    inner = outer.using(idempotent=True)  # other settings, same engine
    other_runner = make_runner(engine, FAST_POLICY)

    def bump(uow: Any) -> int:
        counter = uow.counters.locked("c")
        counter.value += 1
        return connection_id(uow)

    def both(uow: Any) -> tuple[int, int, int]:
        mine = bump(uow)  # holds the row lock
        return mine, inner.run(bump), other_runner.run(bump)

    started = time.monotonic()
    mine, inner_id, other_id = outer.run(both)
    assert time.monotonic() - started < 3  # no lock wait on a second connection
    assert mine == inner_id == other_id
    assert db.counters() == {"c": 3}


def test_a_nested_operation_on_another_database_is_refused_unless_independent(
    db: Database, mariadb: MariaDBServer, make_engine: Callable[..., Engine], recorder: Recorder
) -> None:
    """Another database: NestingError at the inner call; independent=True commits it on its own."""
    from tests.integration.helpers import with_schema  # noqa: PLC0415

    other_db = with_schema(mariadb, mariadb.create_database(f"{db.name}_other"))
    try:
        outer = make_runner(make_engine(db.url), FAST_POLICY, recorder)
        other = make_runner(make_engine(other_db.url), FAST_POLICY)

        def write_both(uow: Any, name: str) -> None:
            uow.tasks.add(Task(name=name))
            other.run(lambda inner: inner.tasks.add(Task(name=name)))

        with pytest.raises(NestingError, match="another database"):
            outer.run(write_both, "refused")
        assert db.task_names() == []
        assert other_db.task_names() == []

        other = other.using(independent=True)
        outer.run(write_both, "independent")
        assert db.task_names() == ["independent"]
        assert other_db.task_names() == ["independent"]
    finally:
        mariadb.drop_database(other_db.name)


# --- 4. async def -------------------------------------------------------------------------


def test_an_async_operation_given_to_the_sync_runner_fails_at_once(
    db: Database, units: Runner[Any]
) -> None:
    """An async def is refused before any transaction: TypeError naming it and the async runner."""

    async def create(uow: Any) -> None:
        uow.tasks.add(Task(name="never"))
        await asyncio.sleep(0)

    with pytest.raises(TypeError, match=r"create is an async function.*async runner"):
        units.run(create)  # type: ignore[unused-coroutine]  # the misuse under test: refused
    with pytest.raises(TypeError, match="async function"):
        units.operation(create)
    assert db.task_names() == []


# --- 5. a caught lost connection ----------------------------------------------------------


def test_a_caught_lost_connection_decides_the_attempt(
    db: Database, units: Runner[Any], recorder: Recorder
) -> None:
    """A caught 2013 then PendingRollbackError: the 2013 decides, the operation is rerun."""
    seen: list[type[BaseException]] = []

    def careless(uow: Any) -> None:
        uow.tasks.add(Task(name="kept"))
        uow.session.flush()
        if not seen:
            db.query(f"KILL CONNECTION {connection_id(uow)}")
            try:
                uow.session.execute(text("SELECT 1"))
            except OperationalError as error:
                seen.append(type(error))
            try:
                uow.session.execute(text("SELECT 1"))  # the session insists on a rollback
            except PendingRollbackError as error:
                seen.append(type(error))
                raise

    units.run(careless)
    assert seen == [OperationalError, PendingRollbackError]
    assert db.task_names() == ["kept"]
    [record] = recorder.records
    assert (record.kind, record.errno, record.will_retry) == (
        ErrorKind.DISCONNECT,
        CR_SERVER_LOST,
        True,
    )


# --- 6. read-only operations ------------------------------------------------------------


@pytest.mark.parametrize("fault", [BeforeCommit(), AfterCommitReply()], ids=["before", "after"])
def test_a_lost_commit_of_a_read_only_operation_is_rerun(
    db: Database,
    proxy: FaultProxy,
    make_engine: Callable[..., Engine],
    recorder: Recorder,
    fault: BeforeCommit | AfterCommitReply,
) -> None:
    """A SELECT-only transaction cannot be ambiguous: its lost COMMIT is rerun, not unknown."""
    db.query("INSERT INTO {db}.tasks (name) VALUES ('a'), ('b')")
    units = proxied_runner(db, proxy, make_engine, recorder)
    proxy.arm(fault)
    names = units.run(lambda uow: sorted(task.name for task in uow.tasks.all()))
    assert names == ["a", "b"]
    assert [(r.attempt, r.kind, r.will_retry) for r in recorder.records] == [
        (1, ErrorKind.DISCONNECT, True)
    ]


def test_reads_write_no_commit_marker(
    private_mariadb: MariaDBServer, make_engine: Callable[..., Engine]
) -> None:
    """With commit markers on, reads work on a read-only server: only writing transactions mark."""
    from adapters.sqlalchemy import (  # noqa: PLC0415
        MARKER_TABLE,
        SqlAlchemyUnitOfWork,
        create_commit_marker_table,
    )
    from tests.integration.helpers import with_schema  # noqa: PLC0415
    from tests.integration.model import REPOSITORIES  # noqa: PLC0415

    db = with_schema(private_mariadb, private_mariadb.create_database("readonly"))
    engine = make_engine(db.url)
    create_commit_marker_table(engine)
    units: Runner[Any] = SqlAlchemyUnitOfWork.factory(
        engine, repositories=REPOSITORIES, policy=FAST_POLICY, commit_markers=True
    )
    units.run(lambda uow: uow.tasks.add(Task(name="written")))
    assert db.query(f"SELECT COUNT(*) FROM {{db}}.{MARKER_TABLE}") == [(1,)]
    private_mariadb.admin("SET GLOBAL read_only = 1")
    try:
        for _ in range(3):
            assert [t.name for t in units.run(lambda uow: uow.tasks.all())] == ["written"]
    finally:
        private_mariadb.admin("SET GLOBAL read_only = 0")
    assert db.query(f"SELECT COUNT(*) FROM {{db}}.{MARKER_TABLE}") == [(1,)]


# --- 8. waiting for a pooled connection ----------------------------------------------------


def test_the_wait_for_a_pooled_connection_counts_against_the_budget(
    db: Database, make_engine: Callable[..., Engine]
) -> None:
    """With the pool exhausted, an operation with a 1.5 s budget gives up in about 1.5 s, not 30."""
    from sqlalchemy.exc import TimeoutError as PoolTimeout  # noqa: PLC0415

    engine = make_engine(db.url, pool_size=1, max_overflow=0, pool_timeout=30)
    units = make_runner(engine, FAST_POLICY.override(timeout=1.5))
    with engine.connect() as held:  # the user's own connection holds the only one
        held.exec_driver_sql("SELECT 1")
        started = time.monotonic()
        with pytest.raises(PoolTimeout):
            units.run(lambda uow: uow.tasks.all())
        waited = time.monotonic() - started
    assert 1.0 < waited < 5.0
    assert units.run(lambda uow: uow.tasks.all()) == []  # the pool works again afterwards


# --- 10. names in logs ----------------------------------------------------------------------


def test_bound_arguments_never_reach_the_logs(
    db: Database, units: Runner[Any], recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """A partial's bound card number stays out of log lines, hook records and notes."""
    caplog.set_level(logging.WARNING, logger="retrying_uow")
    card = "4111 1111 1111 1111"
    killed: list[bool] = []

    def charge(uow: Any, card_number: str) -> None:
        uow.tasks.add(Task(name=card_number[-4:]))
        uow.session.flush()
        if not killed:
            killed.append(True)
            db.query(f"KILL CONNECTION {connection_id(uow)}")
            uow.session.execute(text("SELECT 1"))

    units.run(functools.partial(charge, card_number=card))
    assert db.task_names() == ["1111"]
    [record] = recorder.records
    assert record.operation == "test_bound_arguments_never_reach_the_logs.<locals>.charge"
    assert card not in caplog.text
    assert all(card not in str(r.log_fields()) for r in recorder.records)
    with contextlib.suppress(AttributeError):
        assert all(card not in note for r in recorder.records for note in r.error.__notes__)
    assert retry_details(recorder.records[0].error) is None  # it was retried, not given up
