"""Nesting on one store: an operation started inside another joins it; only the outer retries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from adapters.memory import SimulatedError
from tests.unit.conftest import (
    CAPPED,
    ENTRY_IDS,
    ENTRY_POINTS,
    Task,
    backend_of,
    committed_names,
    create_task,
    make_runner,
)
from uow import RetryDetails, RetryPolicy, Runner, retry_details
from uow.testing import Fault, inject

if TYPE_CHECKING:
    from collections.abc import Callable


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=ENTRY_IDS)
def test_nested_call_on_the_same_runner_joins_the_outer_unit(
    units: Runner[Any], entry: Callable[[Runner[Any], str], Task]
) -> None:
    """A call inside a running operation gets the same unit of work and commits with it."""
    backend = backend_of(units)
    seen: list[Any] = []

    def outer(uow: Any) -> Task:
        seen.append(uow)
        units.run(seen.append)
        return entry(units, "inner")

    units.run(outer)
    assert seen[0] is seen[1]
    assert backend.attempts == 1
    assert backend.commits == 1
    assert committed_names(units) == ["inner"]


def test_nested_writes_roll_back_with_the_outer_failure(units: Runner[Any]) -> None:
    """A joined call has no commit of its own: when the outer fails, its writes are gone."""

    def outer(_uow: Any) -> None:
        units.run(create_task, "inner")
        raise ValueError("outer fails")

    with pytest.raises(ValueError, match="outer fails"):
        units.run(outer)
    assert committed_names(units) == []
    assert backend_of(units).commits == 0


@pytest.mark.usefixtures("instant")
def test_only_the_outermost_operation_retries() -> None:
    """An inner failure reruns the outer operation; attempts total the outer policy, not more."""
    runner = make_runner(CAPPED.override(attempts=3))
    backend = backend_of(runner)
    inner_calls = 0
    outer_calls = 0

    def inner(uow: Any) -> None:
        nonlocal inner_calls
        inner_calls += 1
        uow.tasks.all()

    def outer(_uow: Any) -> None:
        nonlocal outer_calls
        outer_calls += 1
        runner.run(inner)

    with pytest.raises(SimulatedError) as excinfo, inject(Fault.disconnect(at=1, times=10)):
        runner.run(outer)
    assert (outer_calls, inner_calls, backend.attempts) == (3, 3, 3)
    details = retry_details(excinfo.value)
    assert details is not None
    assert details.operation == "test_only_the_outermost_operation_retries.<locals>.outer"
    assert details.attempt == 3


def test_nested_runner_with_other_settings_on_the_same_store_joins(units: Runner[Any]) -> None:
    """A derived runner (using()) on the same backend joins too, instead of retrying alone."""
    backend = backend_of(units)
    other = units.using(policy=RetryPolicy(attempts=10))

    def outer(_uow: Any) -> Task:
        return other.run(create_task, "x")

    with inject(Fault.disconnect(at=1)):
        units.run(outer)
    assert backend.attempts == 2
    assert committed_names(units) == ["x"]


@pytest.mark.usefixtures("instant")
def test_two_runners_on_one_store_share_one_attempt_and_one_commit() -> None:
    """Two runners built apart on one store join: one commit, and only the outer one retries."""
    outer_seen: list[RetryDetails] = []
    inner_seen: list[RetryDetails] = []
    outer_runner = make_runner(CAPPED, hooks=[outer_seen.append])
    backend = backend_of(outer_runner)
    inner_runner: Runner[Any] = Runner(
        backend, policy=RetryPolicy(attempts=9, timeout=60), hooks=[inner_seen.append]
    )
    inner_calls = 0

    def inner(uow: Any) -> Task:
        nonlocal inner_calls
        inner_calls += 1
        uow.tasks.all()  # statement 2 (after the flush of "outer"): fails on attempt 1
        task: Task = uow.tasks.add(Task(name="inner"))
        return task

    def outer(uow: Any) -> Task:
        uow.tasks.add(Task(name="outer"))
        return inner_runner.run(inner)

    with inject(Fault.disconnect(at=2)):
        outer_runner.run(outer)
    assert inner_calls == 2  # once per outer attempt, never twice in one
    assert (backend.attempts, backend.commits) == (2, 1)
    assert committed_names(outer_runner) == ["inner", "outer"]
    assert [d.attempt for d in outer_seen] == [1]
    assert inner_seen == []


@pytest.mark.usefixtures("instant")
def test_inner_writes_of_another_runner_roll_back_with_the_outer_failure() -> None:
    """The inner runner's writes are part of the outer attempt: an outer error drops them."""
    outer_runner = make_runner()
    inner_runner: Runner[Any] = Runner(backend_of(outer_runner), idempotent=True)

    def outer(_uow: Any) -> None:
        inner_runner.run(create_task, "inner")
        raise LookupError("outer fails after the inner call")

    with pytest.raises(LookupError):
        outer_runner.run(outer)
    assert backend_of(outer_runner).commits == 0
    assert committed_names(outer_runner) == []


def test_joined_unit_sees_the_outer_writes(units: Runner[Any]) -> None:
    """A nested call reads what the outer operation staged in the same attempt."""

    def outer(uow: Any) -> list[str]:
        uow.tasks.add(Task(name="staged"))
        return units.run(lambda inner: [t.name for t in inner.tasks.all()])

    assert units.run(outer) == ["staged"]


def test_sequential_operations_are_not_nested(units: Runner[Any]) -> None:
    """After an operation ends, the next call starts its own unit of work and commit."""
    backend = backend_of(units)
    units.run(create_task, "a")
    units.run(create_task, "b")
    assert backend.commits == 2


def test_nesting_state_is_reset_after_a_failure(units: Runner[Any]) -> None:
    """An operation that failed leaves no active unit of work behind for the next call."""
    with pytest.raises(ZeroDivisionError):
        units.run(lambda _uow: 1 / 0)
    backend = backend_of(units)
    units.run(create_task, "after")
    assert backend.attempts == 2
    assert backend.commits == 1
