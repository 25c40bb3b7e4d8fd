"""What outlives an operation (its results) and what does not (its unit of work); nested calls."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import InvalidRequestError

from tests.integration.helpers import FAST_POLICY, make_runner
from tests.integration.model import Task
from uow import ErrorKind, UnitOfWorkClosedError, retry_details

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Engine

    from tests.integration.helpers import Database, Recorder

pytestmark = pytest.mark.integration

CR_SERVER_LOST = 2013


class BusinessRuleViolatedError(Exception):
    """A domain error: unknown to the classifier, hence permanent."""


def connection_id(uow: Any) -> int:
    return int(uow.session.execute(text("SELECT CONNECTION_ID()")).scalar_one())


def count_commits(engine: Engine) -> list[object]:
    commits: list[object] = []
    event.listen(engine, "commit", commits.append)
    return commits


def test_result_is_usable_after_the_session_closed_and_kept_unit_of_work_is_refused(
    db: Database, make_engine: Callable[..., Engine], recorder: Recorder
) -> None:
    """The result is usable after run(); a kept unit of work, repository or session refuses use."""
    engine = make_engine(db.url)
    runner = make_runner(engine, FAST_POLICY, recorder)
    kept: dict[str, Any] = {}

    def create(uow: Any, name: str) -> Task:
        kept.update(uow=uow, tasks=uow.tasks, session=uow.session)
        task: Task = uow.tasks.add(Task(name=name))
        return task

    task = runner.run(create, "kept")

    assert (task.id, task.name) == db.query("SELECT id, name FROM {db}.tasks")[0]
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]  # nothing holds a connection
    assert not kept["uow"].active
    with pytest.raises(UnitOfWorkClosedError):
        _ = kept["uow"].tasks
    with pytest.raises(UnitOfWorkClosedError):
        _ = kept["uow"].session
    with pytest.raises(UnitOfWorkClosedError):
        kept["tasks"].all()
    with pytest.raises(UnitOfWorkClosedError):
        kept["tasks"].add(Task(name="late"))
    # The Session itself is closed for good: it does not quietly open a new transaction.
    with pytest.raises(InvalidRequestError):
        kept["session"].execute(text("SELECT 1"))
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert db.task_names() == ["kept"]
    assert recorder.records == []


def test_nested_call_joins_the_outer_unit_of_work(
    db: Database, make_engine: Callable[..., Engine], recorder: Recorder
) -> None:
    """A nested runner call joins the outer unit of work: same connection, one commit in all."""
    engine = make_engine(db.url)
    runner = make_runner(engine, FAST_POLICY, recorder)
    commits = count_commits(engine)
    seen: dict[str, list[tuple[Any, int]]] = {"outer": [], "inner": []}

    def inner(uow: Any, name: str) -> None:
        seen["inner"].append((uow, connection_id(uow)))
        uow.tasks.add(Task(name=name))

    def outer(uow: Any) -> None:
        seen["outer"].append((uow, connection_id(uow)))
        uow.tasks.add(Task(name="outer"))
        runner.run(inner, "inner")
        assert commits == []  # the inner call did not commit

    runner.run(outer)

    [(outer_uow, outer_connection)] = seen["outer"]
    [(inner_uow, inner_connection)] = seen["inner"]
    assert inner_uow is outer_uow
    assert inner_connection == outer_connection
    assert len(commits) == 1
    assert db.task_names() == ["inner", "outer"]
    assert recorder.records == []


def test_permanent_error_after_a_nested_call_rolls_back_its_write_too(
    db: Database, make_engine: Callable[..., Engine], recorder: Recorder
) -> None:
    """A permanent error in the outer operation after a nested call rolls the nested write back."""
    engine = make_engine(db.url)
    runner = make_runner(engine, FAST_POLICY, recorder)
    commits = count_commits(engine)
    calls = {"outer": 0, "inner": 0}

    def inner(uow: Any, name: str) -> None:
        calls["inner"] += 1
        uow.tasks.add(Task(name=name))
        uow.session.flush()  # on the server, inside the outer transaction

    def outer(_uow: Any) -> None:
        calls["outer"] += 1
        runner.run(inner, "inner")
        raise BusinessRuleViolatedError

    with pytest.raises(BusinessRuleViolatedError) as caught:
        runner.run(outer)

    details = retry_details(caught.value)
    assert details is not None
    assert (details.attempt, details.kind) == (1, ErrorKind.PERMANENT)
    assert calls == {"outer": 1, "inner": 1}
    assert commits == []
    assert db.task_names() == []
    assert recorder.retries == []


def test_transient_failure_in_a_nested_call_reruns_only_the_outermost_operation(
    db: Database, make_engine: Callable[..., Engine], recorder: Recorder
) -> None:
    """A disconnect inside a nested call is not retried there: the outer operation reruns once."""
    engine = make_engine(db.url)
    runner = make_runner(engine, FAST_POLICY, recorder)
    calls = {"outer": 0, "inner": 0}

    def inner(uow: Any, name: str) -> None:
        calls["inner"] += 1
        uow.tasks.add(Task(name=name))
        uow.session.flush()
        if calls["inner"] == 1:
            db.query("KILL CONNECTION %s", [connection_id(uow)])
            uow.tasks.by_name(name)  # 2013

    def outer(uow: Any) -> None:
        calls["outer"] += 1
        uow.tasks.add(Task(name="outer"))
        runner.run(inner, "inner")

    runner.run(outer)

    assert calls == {"outer": 2, "inner": 2}  # not 2 x 2: the inner call never retried alone
    assert db.task_names() == ["inner", "outer"]
    [record] = recorder.records
    assert (record.attempt, record.kind, record.errno) == (1, ErrorKind.DISCONNECT, CR_SERVER_LOST)
    assert record.operation.endswith("outer")
