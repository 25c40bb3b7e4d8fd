"""Domain events: published once, after the commit of the attempt that succeeded."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytest

from adapters.memory import AsyncInMemoryBackend, InMemoryUnitOfWork, SimulatedError
from tests.unit.conftest import CAPPED, LOGGER, Task, TaskRepository, backend_of
from uow import AsyncRunner, CommitOutcomeUnknown, EventHandler, Runner, UnitOfWorkClosedError
from uow.testing import Fault, inject, set_testing


@dataclass(frozen=True)
class TaskEvent:
    name: str


@dataclass(frozen=True)
class TaskCreated(TaskEvent):
    pass


@dataclass(frozen=True)
class TaskDeleted(TaskEvent):
    pass


def create_task(uow: Any, name: str) -> Task:
    task: Task = uow.tasks.add(Task(name=name))
    uow.record_event(TaskCreated(name))
    return task


def runner_with(handlers: dict[type, list[EventHandler]], **kwargs: Any) -> Runner[Any]:
    return InMemoryUnitOfWork.factory(
        repositories={"tasks": TaskRepository}, event_handlers=handlers, **kwargs
    )


@pytest.mark.usefixtures("instant")
def test_event_is_published_once_after_commit() -> None:
    """A recorded event reaches its handler once, after the data is committed."""
    published: list[tuple[object, int]] = []
    runner: Runner[Any] = runner_with({})

    def handler(event: object) -> None:
        published.append((event, backend_of(runner).commits))

    runner = runner_with({TaskCreated: [handler]})
    runner.run(create_task, "a")
    assert published == [(TaskCreated("a"), 1)]


@pytest.mark.usefixtures("instant")
def test_failed_attempts_events_are_dropped() -> None:
    """Events of an attempt that failed never reach a handler; the rerun's are published."""
    published: list[object] = []
    runner = runner_with({TaskCreated: [published.append]})
    attempt = 0

    def op(uow: Any) -> None:
        nonlocal attempt
        attempt += 1
        uow.record_event(TaskCreated(f"attempt {attempt}"))
        uow.tasks.all()

    with inject(Fault.disconnect(at=1, times=2)):
        runner.run(op)
    assert published == [TaskCreated("attempt 3")]


@pytest.mark.usefixtures("instant")
def test_no_events_when_the_operation_fails() -> None:
    """An operation that ends in an error publishes nothing."""
    published: list[object] = []
    runner = runner_with({TaskCreated: [published.append]})

    def op(uow: Any) -> None:
        create_task(uow, "a")
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        runner.run(op)
    assert published == []


@pytest.mark.usefixtures("instant")
def test_no_events_when_the_commit_outcome_is_unknown() -> None:
    """A lost COMMIT that cannot be resolved publishes nothing."""
    published: list[object] = []
    runner = runner_with({TaskCreated: [published.append]})
    with pytest.raises(CommitOutcomeUnknown), inject(Fault.lost_commit(committed=True)):
        runner.run(create_task, "a")
    assert published == []


@pytest.mark.usefixtures("instant")
def test_events_published_when_markers_show_the_commit() -> None:
    """A lost COMMIT resolved as committed publishes the attempt's events once."""
    published: list[object] = []
    runner = runner_with({TaskCreated: [published.append]}, commit_markers=True)
    with inject(Fault.lost_commit(committed=True)):
        runner.run(create_task, "a")
    assert published == [TaskCreated("a")]
    assert backend_of(runner).attempts == 1


@pytest.mark.usefixtures("instant")
def test_handlers_are_chosen_by_class_including_base_classes() -> None:
    """An event goes to the handlers of its class and of its base classes, in order."""
    created: list[object] = []
    everything: list[object] = []
    runner = runner_with({TaskCreated: [created.append], TaskEvent: [everything.append]})

    def op(uow: Any) -> None:
        uow.record_event(TaskCreated("a"))
        uow.record_event(TaskDeleted("b"))
        uow.record_event("unrelated")

    runner.run(op)
    assert created == [TaskCreated("a")]
    assert everything == [TaskCreated("a"), TaskDeleted("b")]


@pytest.mark.usefixtures("instant")
def test_failing_handler_is_logged_and_the_commit_stands(caplog: pytest.LogCaptureFixture) -> None:
    """A handler that raises is logged; the operation returns and later handlers still run."""
    caplog.set_level(logging.ERROR, logger=LOGGER)
    later: list[object] = []

    def broken(_event: object) -> None:
        raise RuntimeError("mail server down")

    runner = runner_with({TaskCreated: [broken, later.append]})
    task = runner.run(create_task, "a")
    assert task.name == "a"
    assert later == [TaskCreated("a")]
    assert backend_of(runner).commits == 1
    assert backend_of(runner).attempts == 1
    (record,) = [r for r in caplog.records if r.name == LOGGER]
    assert "the commit stands" in record.getMessage()
    assert record.uow_event == "TaskCreated"  # type: ignore[attr-defined]
    assert record.exc_info is not None


@pytest.mark.usefixtures("instant")
def test_handler_can_start_a_new_operation() -> None:
    """Handlers run outside the finished attempt: they may run operations of their own."""
    runner: Runner[Any] = runner_with({})
    seen: list[list[str]] = []

    def handler(_event: object) -> None:
        seen.append(runner.run(lambda uow: [t.name for t in uow.tasks.all()]))

    runner = runner_with({TaskCreated: [handler]})
    runner.run(create_task, "a")
    assert seen == [["a"]]
    assert backend_of(runner).commits == 2


@pytest.mark.usefixtures("instant")
def test_nested_call_events_are_published_with_the_outer_commit() -> None:
    """Events recorded by a joined nested call are published once, after the outer commit."""
    published: list[object] = []
    runner = runner_with({TaskCreated: [published.append]})

    def outer(uow: Any) -> None:
        runner.run(create_task, "inner")
        assert published == []
        uow.record_event(TaskCreated("outer"))

    runner.run(outer)
    assert published == [TaskCreated("inner"), TaskCreated("outer")]


@pytest.mark.usefixtures("instant")
def test_using_keeps_event_handlers() -> None:
    """A runner derived with using() publishes to the same handlers."""
    published: list[object] = []
    runner = runner_with({TaskCreated: [published.append]}).using(idempotent=True)
    runner.run(create_task, "a")
    assert published == [TaskCreated("a")]


@pytest.mark.usefixtures("instant")
def test_recording_after_the_attempt_ended_raises() -> None:
    """record_event on a kept unit of work raises UnitOfWorkClosedError."""
    runner = runner_with({})
    kept = runner.run(lambda uow: uow)
    with pytest.raises(UnitOfWorkClosedError):
        kept.record_event(TaskCreated("late"))


@pytest.mark.usefixtures("instant")
def test_unit_of_work_lists_its_recorded_events() -> None:
    """uow.events shows what this attempt recorded so far, as an immutable tuple."""

    def op(uow: Any) -> object:
        uow.record_event(TaskCreated("a"))
        return uow.events

    assert runner_with({}).run(op) == (TaskCreated("a"),)


@pytest.mark.usefixtures("instant")
def test_exhausted_operation_publishes_nothing() -> None:
    """When every attempt fails, no event of any attempt is published."""
    published: list[object] = []
    runner = runner_with({TaskCreated: [published.append]}, policy=CAPPED)

    def op(uow: Any) -> None:
        uow.record_event(TaskCreated("a"))
        uow.tasks.all()

    with pytest.raises(SimulatedError), inject(Fault.disconnect(at=1, times=5)):
        runner.run(op)
    assert published == []
    assert backend_of(runner).attempts == 5


@pytest.mark.anyio
async def test_async_runner_awaits_async_handlers_after_the_commit() -> None:
    """An async runner awaits a handler's coroutine, after the commit, once per event."""
    published: list[tuple[object, int]] = []
    backend = AsyncInMemoryBackend({"tasks": TaskRepository})

    async def handler(event: object) -> None:
        published.append((event, backend.commits))

    runner = AsyncRunner(backend, event_handlers={TaskCreated: [handler]})
    with set_testing(True), inject(Fault.disconnect(at=1)):
        await runner.run(create_task, "a")  # type: ignore[arg-type]  # plain functions run too; run() is typed for awaitables
    assert published == [(TaskCreated("a"), 1)]


@pytest.mark.usefixtures("instant")
def test_events_of_a_joined_runner_share_the_outer_attempt() -> None:
    """Another runner joining on the same store records into the outer attempt's events."""
    published: list[object] = []
    outer_runner = runner_with({TaskCreated: [published.append]})
    inner_runner: Runner[Any] = Runner(backend_of(outer_runner))  # no handlers of its own

    def outer(uow: Any) -> None:
        inner_runner.run(create_task, "inner")
        assert uow.events == (TaskCreated("inner"),)

    outer_runner.run(outer)
    assert published == [TaskCreated("inner")]
