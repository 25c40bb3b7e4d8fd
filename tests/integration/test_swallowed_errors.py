"""An operation that catches a transient error and returns is never committed as it is."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from tests.integration.helpers import FAST_POLICY, make_runner
from tests.integration.model import Task
from uow import ErrorKind, RetryDetails

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Engine

    from tests.integration.helpers import Database, Recorder

pytestmark = pytest.mark.integration

ER_LOCK_WAIT_TIMEOUT = 1205


def test_swallowed_lock_wait_timeout_is_rolled_back_and_rerun(
    db: Database, make_engine: Callable[..., Engine], recorder: Recorder
) -> None:
    """Code that catches a 1205 and returns gets its attempt rerun: the fault-free state results."""
    db.query("INSERT INTO {db}.counters (name, value) VALUES ('L', 0)")
    locker = db.raw_connection()

    def release_lock(details: RetryDetails, /) -> None:
        if details.kind is ErrorKind.LOCK_WAIT:
            locker.rollback()

    caught: list[int | None] = []

    def insert_then_update(uow: Any) -> None:
        uow.tasks.add(Task(name="X"))
        uow.session.flush()
        try:
            uow.session.execute(text("UPDATE counters SET value = value + 1 WHERE name = 'L'"))
        except OperationalError as error:  # the mistake under test: swallow and carry on
            caught.append(error.orig.args[0] if error.orig is not None else None)

    try:
        with locker.cursor() as cursor:
            cursor.execute("SELECT value FROM counters WHERE name = 'L' FOR UPDATE")
        engine = make_engine(db.url, init_command="SET SESSION innodb_lock_wait_timeout=1")
        runner = make_runner(engine, FAST_POLICY, recorder, release_lock)
        runner.run(insert_then_update)
    finally:
        locker.close()

    assert caught == [ER_LOCK_WAIT_TIMEOUT]  # attempt 1 swallowed it; attempt 2 had no error
    # Committing attempt 1 would have left X without the counter update.
    assert db.query("SELECT name FROM {db}.tasks") == [("X",)]
    assert db.counters() == {"L": 1}
    [record] = recorder.records
    assert (record.attempt, record.kind, record.errno, record.will_retry) == (
        1,
        ErrorKind.LOCK_WAIT,
        ER_LOCK_WAIT_TIMEOUT,
        True,
    )
    assert any("was not committed" in note for note in record.error.__notes__)


def test_caught_permanent_error_does_not_block_the_commit(
    db: Database, make_engine: Callable[..., Engine], recorder: Recorder
) -> None:
    """Catching an IntegrityError (insert-or-ignore) is legitimate: the attempt commits once."""
    db.query("INSERT INTO {db}.tasks (name) VALUES ('dup')")
    engine = make_engine(db.url)
    runner = make_runner(engine, FAST_POLICY, recorder)
    runs: list[int] = []

    def insert_or_ignore(uow: Any) -> None:
        runs.append(uow.attempt.number)
        with contextlib.suppress(IntegrityError):  # the duplicate is expected and harmless
            uow.session.execute(text("INSERT INTO tasks (name) VALUES ('dup')"))
        uow.tasks.add(Task(name="new"))

    runner.run(insert_or_ignore)

    assert runs == [1]
    assert sorted(db.query("SELECT name FROM {db}.tasks")) == [("dup",), ("new",)]
    assert recorder.records == []
