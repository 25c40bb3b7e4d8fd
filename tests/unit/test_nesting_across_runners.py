"""Nesting across databases, flavours and tasks: refused unless the inner runner is independent."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from adapters.memory import AsyncInMemoryBackend, SimulatedError
from tests.unit.conftest import (
    CAPPED,
    Task,
    TaskRepository,
    backend_of,
    committed_names,
    create_task,
    make_runner,
)
from uow import AsyncRunner, ErrorKind, NestingError, Runner, retry_details
from uow.testing import Fault, inject, set_testing


def test_operation_on_another_store_is_refused_at_the_inner_call(units: Runner[Any]) -> None:
    """An operation on another database inside a running one: NestingError, nothing committed."""
    other = make_runner()
    reached: list[str] = []

    def outer(uow: Any) -> Task:
        uow.tasks.add(Task(name="outer"))
        try:
            return other.run(create_task, "inner")
        finally:
            reached.append("inner call returned or raised")

    with pytest.raises(NestingError, match="another database") as excinfo:
        units.run(outer)
    assert "independent=True" in str(excinfo.value)
    assert reached == ["inner call returned or raised"]
    assert (backend_of(other).attempts, backend_of(other).commits) == (0, 0)
    assert (backend_of(units).attempts, backend_of(units).commits) == (1, 0)
    assert committed_names(other) == committed_names(units) == []


def test_block_form_on_another_store_is_refused_too(units: Runner[Any]) -> None:
    """The block form of another store's runner, inside an operation, raises NestingError."""
    other = make_runner()

    def outer(_uow: Any) -> None:
        for attempt in other.attempts("inner_block"):
            with attempt as unit:
                unit.tasks.add(Task(name="inner"))

    with pytest.raises(NestingError, match="inner_block"):
        units.run(outer)
    assert backend_of(other).attempts == 0


def test_independent_inner_commits_on_its_own_and_is_repeated_by_a_rerun(
    units: Runner[Any],
) -> None:
    """independent=True: the inner operation commits by itself; an outer rerun runs it again."""
    other = make_runner().using(independent=True)
    outer_calls = 0

    def outer(uow: Any) -> None:
        nonlocal outer_calls
        outer_calls += 1
        uow.tasks.add(Task(name="outer"))
        other.run(create_task, "inner")
        uow.tasks.all()  # statements 1 (the flush) and 2: fails on the outer's first attempt

    with inject(Fault.disconnect(at=2)) as injection:
        units.run(outer)
    assert outer_calls == 2
    assert (backend_of(units).attempts, backend_of(units).commits) == (2, 1)
    assert (backend_of(other).attempts, backend_of(other).commits) == (2, 2)
    assert committed_names(units) == ["outer"]
    assert committed_names(other) == ["inner", "inner"]  # the repeat the caller accepted
    assert injection.attempts("create_task") == 1  # each inner run was a first attempt


def test_independent_inner_retries_by_itself(units: Runner[Any]) -> None:
    """An independent inner operation reruns itself; the outer attempt goes on and commits."""
    other = make_runner().using(independent=True)

    def outer(uow: Any) -> None:
        other.run(create_task, "inner")
        uow.tasks.add(Task(name="outer"))

    with inject(Fault.disconnect(at=1)) as injection:  # the inner's flush is the first statement
        units.run(outer)
    assert (backend_of(other).attempts, backend_of(other).commits) == (2, 1)
    assert (backend_of(units).attempts, backend_of(units).commits) == (1, 1)
    assert injection.attempts("create_task") == 2


def test_given_up_inner_error_is_not_retried_by_the_outer_runner(units: Runner[Any]) -> None:
    """An error an independent operation gave up on keeps its details; the outer does not rerun."""
    other = make_runner(CAPPED).using(independent=True)
    outer_calls = 0

    def outer(_uow: Any) -> None:
        nonlocal outer_calls
        outer_calls += 1
        other.run(create_task, "x")

    with pytest.raises(SimulatedError) as excinfo, inject(Fault.disconnect(at=1, times=50)):
        units.run(outer)
    assert outer_calls == 1
    assert backend_of(other).attempts == 5
    details = retry_details(excinfo.value)
    assert details is not None
    assert (details.operation, details.kind, details.attempt, details.reason) == (
        "create_task",
        ErrorKind.DISCONNECT,
        5,
        "attempts exhausted",
    )


def test_an_operation_in_a_fresh_context_is_outermost(units: Runner[Any]) -> None:
    """In a fresh context (as in a worker thread) an operation is its own, with its own retries."""
    other = make_runner(CAPPED)

    def in_worker() -> None:
        with inject(Fault.disconnect(at=1, times=50)):
            other.run(create_task, "x")

    def outer(_uow: Any) -> None:
        contextvars.Context().run(in_worker)

    with pytest.raises(SimulatedError) as excinfo:
        units.run(outer)
    assert backend_of(other).attempts == 5
    assert backend_of(units).attempts == 1
    details = retry_details(excinfo.value)
    assert details is not None
    assert details.operation == "create_task"


def async_runner(**options: Any) -> AsyncRunner[Any]:
    return AsyncRunner(AsyncInMemoryBackend({"tasks": TaskRepository}), **options)


@pytest.mark.anyio
async def test_sync_runner_inside_an_async_operation_is_refused() -> None:
    """A sync runner on the same store cannot join an async operation: NestingError."""
    aunits = async_runner()
    sync_units: Runner[Any] = Runner(aunits.backend)  # type: ignore[arg-type]

    async def outer(_uow: Any) -> None:
        sync_units.run(create_task, "inner")

    with set_testing(True), pytest.raises(NestingError, match="async runner"):
        await aunits.run(outer)
    assert backend_of(aunits).commits == 0


@pytest.mark.anyio
async def test_nested_call_in_another_task_is_refused() -> None:
    """A nested operation awaited in a task of its own cannot share the outer session."""
    aunits = async_runner()

    async def inner(uow: Any) -> Task:
        task: Task = uow.tasks.add(Task(name="inner"))
        return task

    async def outer(_uow: Any) -> Task:
        return await asyncio.create_task(aunits.run(inner))

    with set_testing(True), pytest.raises(NestingError, match="task of its own"):
        await aunits.run(outer)
    assert backend_of(aunits).commits == 0


@pytest.mark.anyio
async def test_nested_async_call_in_the_same_task_joins() -> None:
    """Awaited in the outer task, a nested async operation joins: one attempt, one commit."""
    aunits = async_runner()

    async def outer(uow: Any) -> Task:
        uow.tasks.add(Task(name="outer"))
        return await aunits.run(create_task, "inner")  # type: ignore[arg-type]  # plain functions run too; run() is typed for awaitables

    with set_testing(True), inject(Fault.disconnect(at=1)):
        await aunits.run(outer)
    assert (backend_of(aunits).attempts, backend_of(aunits).commits) == (2, 1)
    assert committed_names(aunits) == ["inner", "outer"]
