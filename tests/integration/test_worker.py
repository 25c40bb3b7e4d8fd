"""Forked workers against MariaDB: what the child's dispose does to the parent's connection.

The recipe (README "Workers and task queues", examples/worker.py): a forked child calls
``engine.dispose(close=False)`` before any database work, so the parent's pooled
connections, whose sockets the child shares, stay open for the parent.
"""

from __future__ import annotations

import multiprocessing
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import text

from tests.integration.helpers import FAST_POLICY, make_runner
from tests.integration.model import Task
from uow import ErrorKind

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Engine

    from tests.integration.helpers import Database, Recorder

pytestmark = [
    pytest.mark.integration,
    # Python 3.12+ warns when forking a process that has threads (pytest's, the proxy's).
    pytest.mark.filterwarnings(
        "ignore:.*use of fork\\(\\) may lead to deadlocks:DeprecationWarning"
    ),
]


def connection_id(uow: Any) -> int:
    return int(uow.session.execute(text("SELECT CONNECTION_ID()")).scalar_one())


def child(engine: Engine, close: bool, name: str) -> None:
    engine.dispose(close=close)
    runner = make_runner(engine, FAST_POLICY)
    runner.run(lambda uow: uow.tasks.add(Task(name=name)))
    engine.dispose()  # the child's own connection


def run_child(engine: Engine, *, close: bool, name: str) -> int | None:
    process = multiprocessing.get_context("fork").Process(target=child, args=(engine, close, name))
    process.start()
    process.join(30)
    return process.exitcode


def test_dispose_close_false_in_the_child_keeps_the_parents_connection(
    db: Database, make_engine: Callable[..., Engine], recorder: Recorder
) -> None:
    """The child works on its own connection; the parent's pooled one serves it on, no retry."""
    engine = make_engine(db.url)
    runner = make_runner(engine, FAST_POLICY, recorder)
    before = runner.run(connection_id)

    assert run_child(engine, close=False, name="from-child") == 0

    assert runner.run(connection_id) == before
    assert db.connection_alive(before)
    assert recorder.records == []
    assert db.task_names() == ["from-child"]


def test_a_child_that_closes_the_inherited_pool_ends_the_parents_connection(
    db: Database, make_engine: Callable[..., Engine], recorder: Recorder
) -> None:
    """Without close=False the child's dispose quits the parent's connection: one rerun."""
    engine = make_engine(db.url)
    runner = make_runner(engine, FAST_POLICY, recorder)
    before = runner.run(connection_id)

    assert run_child(engine, close=True, name="from-child") == 0
    db.wait_connection_gone(before)

    after = runner.run(connection_id)  # survives, but only because the runner reran it
    assert after != before
    [record] = recorder.records
    assert (record.attempt, record.kind, record.will_retry) == (1, ErrorKind.DISCONNECT, True)
    assert db.task_names() == ["from-child"]
