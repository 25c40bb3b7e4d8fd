"""Reruns: a transient failure reruns the whole operation on a fresh unit of work."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from adapters.memory import SimulatedError
from tests.unit.conftest import (
    ENTRY_IDS,
    ENTRY_POINTS,
    Task,
    backend_of,
    committed_names,
    create_task,
)
from uow import ErrorKind, retry_details
from uow.testing import Fault, inject

if TYPE_CHECKING:
    from collections.abc import Callable

    from uow import Runner


def create_two_tasks(uow: Any, first: str, second: str) -> list[Task]:
    """Reads, then adds two tasks: a fault at statement 2 strikes at the flush of both."""
    uow.tasks.all()
    return [uow.tasks.add(Task(name=first)), uow.tasks.add(Task(name=second))]


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=ENTRY_IDS)
def test_every_entry_point_reruns_after_a_disconnect(
    units: Runner[Any], entry: Callable[[Runner[Any], str], Task]
) -> None:
    """run, the decorator and the block form all rerun a lost connection the same way."""
    backend = backend_of(units)
    with inject(Fault.disconnect(at=1, times=2)):
        task = entry(units, "t0001")
    assert task.name == "t0001"
    assert task.id is not None
    assert backend.attempts == 3
    assert backend.commits == 1
    assert committed_names(units) == ["t0001"]


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=ENTRY_IDS)
def test_every_entry_point_gives_up_the_same_way(
    units: Runner[Any], entry: Callable[[Runner[Any], str], Task]
) -> None:
    """All entry points raise the original error after the kind's attempts, with details."""
    backend = backend_of(units)
    with pytest.raises(SimulatedError) as excinfo, inject(Fault.deadlock(at=1, times=5)):
        entry(units, "t0001")
    details = retry_details(excinfo.value)
    assert details is not None
    assert (details.attempt, details.max_attempts) == (5, 5)
    assert details.reason == "attempts exhausted"
    assert backend.attempts == 5
    assert backend.commits == 0


def test_rerun_ends_with_exactly_one_committed_entity(units: Runner[Any]) -> None:
    """After a disconnect at the second statement the store holds one copy of each write."""
    backend = backend_of(units)
    with inject(Fault.disconnect(at=2, errno=2006)):
        tasks = units.run(create_two_tasks, "a", "b")
    assert [t.name for t in tasks] == ["a", "b"]
    assert backend.attempts == 2
    assert backend.commits == 1
    assert committed_names(units) == ["a", "b"]


def test_failed_attempts_writes_are_dropped(units: Runner[Any]) -> None:
    """Changes made by a failed attempt (insert and update) never reach the store."""
    existing = units.run(create_task, "existing")
    seen: list[list[tuple[str, bool]]] = []

    def finish_and_add(uow: Any) -> None:
        seen.append([(t.name, t.done) for t in uow.tasks.all()])  # statement 1
        uow.tasks.get(existing.id).done = True  # loaded already: no statement
        uow.tasks.add(Task(name="new"))
        uow.tasks.all()  # the flush: UPDATE (2), INSERT (3); the read (4) fails at first

    with inject(Fault.lock_wait(at=4)):
        units.run(finish_and_add)
    assert seen == [[("existing", False)], [("existing", False)]]
    stored = units.run(lambda uow: {t.name: t.done for t in uow.tasks.all()})
    assert stored == {"existing": True, "new": False}


def test_successful_operation_runs_once_and_commits_once(units: Runner[Any]) -> None:
    """Without failures there is one attempt and one commit, and the result comes back."""
    backend = backend_of(units)
    task = units.run(create_task, "once")
    assert (backend.attempts, backend.commits) == (1, 1)
    assert task.name == "once"


def test_arguments_reach_the_operation(units: Runner[Any]) -> None:
    """Positional and keyword arguments are passed after the unit of work, on every attempt."""
    calls: list[tuple[Any, ...]] = []

    def op(uow: Any, a: int, *, b: str) -> str:
        calls.append((a, b))
        uow.tasks.all()
        return f"{a}{b}"

    with inject(Fault(ErrorKind.UNAVAILABLE, 2003)):
        assert units.run(op, 1, b="x") == "1x"
    assert calls == [(1, "x"), (1, "x")]


def test_decorator_keeps_name_and_docstring(units: Runner[Any]) -> None:
    """operation() wraps with functools.wraps, so the decorated function looks the same."""
    decorated = units.operation(create_task)
    assert decorated.__name__ == "create_task"
    assert decorated.__doc__ == create_task.__doc__
    assert decorated.__wrapped__ is create_task  # type: ignore[attr-defined]


def test_each_attempt_gets_a_fresh_unit_of_work(units: Runner[Any]) -> None:
    """A rerun never reuses the failed attempt's unit of work."""
    seen: list[Any] = []

    def op(uow: Any) -> None:
        seen.append(uow)
        uow.tasks.all()

    with inject(Fault.disconnect(at=1, times=2)):
        units.run(op)
    assert len(seen) == 3
    assert len({id(u) for u in seen}) == 3
    assert not any(u.active for u in seen)


def test_fault_at_a_later_statement(units: Runner[Any]) -> None:
    """A fault at statement N strikes the N-th read or flush, not the first."""
    calls: list[int] = []

    def op(uow: Any) -> None:
        for n in range(1, 4):
            calls.append(n)
            uow.tasks.all()

    with inject(Fault.disconnect(at=3)):
        units.run(op)
    assert calls == [1, 2, 3, 1, 2, 3]


def test_remaining_faults_are_retried_by_the_next_operation(capped: Runner[Any]) -> None:
    """Faults left over after one operation gave up are transient again for the next one."""
    backend = backend_of(capped)
    with inject(Fault.disconnect(at=1, times=7)):
        with pytest.raises(SimulatedError):
            capped.run(create_task, "first")
        assert capped.run(create_task, "second").name == "second"
    assert backend.attempts == 8
    assert committed_names(capped) == ["second"]


def test_disconnects_are_retried_past_five_attempts_by_default(units: Runner[Any]) -> None:
    """Lost connections have no count by default: only the time budget ends their reruns."""
    with inject(Fault.disconnect(at=1, times=12)):
        units.run(create_task, "patient")
    assert backend_of(units).attempts == 13
    assert committed_names(units) == ["patient"]
