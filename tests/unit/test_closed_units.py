"""Closed units of work: nothing kept past its attempt can be used, repositories are named."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.memory import InMemoryUnitOfWork
from tests.unit.conftest import Task, TaskRepository, backend_of, committed_names
from uow import AttemptInfo, Runner, UnitOfWorkClosedError, repository


def test_unit_of_work_used_after_its_attempt_raises(units: Runner[Any]) -> None:
    """A unit of work kept past its operation refuses work with UnitOfWorkClosedError."""
    kept = units.run(lambda uow: uow)
    assert kept.active is False
    with pytest.raises(UnitOfWorkClosedError, match="has ended"):
        kept.tasks.add(Task(name="late"))
    with pytest.raises(UnitOfWorkClosedError, match="has ended"):
        kept.flush()
    assert committed_names(units) == []


def test_repository_used_after_its_attempt_raises(units: Runner[Any]) -> None:
    """A repository kept past its operation refuses work too, naming the operation."""
    repository = units.run(lambda uow: uow.tasks)
    with pytest.raises(UnitOfWorkClosedError, match="lambda"):
        repository.all()
    with pytest.raises(UnitOfWorkClosedError):
        repository.add(Task(name="late"))


def test_unit_of_work_is_active_inside_the_operation(units: Runner[Any]) -> None:
    """Inside the operation the unit of work reports itself active."""
    assert units.run(lambda uow: uow.active) is True


def test_repr_says_which_attempt_and_whether_it_ended(units: Runner[Any]) -> None:
    """repr(uow) names the operation, the attempt and whether it is still active."""
    inside: list[str] = []

    def look(uow: Any) -> Any:
        inside.append(repr(uow))
        return uow

    kept = units.run(look)
    assert inside == [f"<InMemoryUnitOfWork {look.__qualname__!r} attempt=1 active>"]
    assert repr(kept).endswith("attempt=1 ended>")


def test_unknown_repository_raises_attribute_error_naming_known_ones(units: Runner[Any]) -> None:
    """A misspelt repository is an AttributeError listing the repositories there are."""
    backend = backend_of(units)
    with pytest.raises(AttributeError, match=r"'taks'.*tasks"):
        units.run(lambda uow: uow.taks)
    assert backend.attempts == 1
    assert backend.commits == 0


@pytest.mark.usefixtures("instant")
def test_unit_of_work_without_repositories_says_none() -> None:
    """With no repositories registered the message says so."""
    runner = InMemoryUnitOfWork.factory()
    with pytest.raises(AttributeError, match=r"repositories: none"):
        runner.run(lambda uow: uow.tasks)  # type: ignore[attr-defined]  # the mistake under test


def test_getattr_on_an_uninitialised_unit_of_work_raises_attribute_error() -> None:
    """__getattr__ keeps Python's contract (AttributeError), so copy and hasattr work."""
    bare = InMemoryUnitOfWork.__new__(InMemoryUnitOfWork)
    assert not hasattr(bare, "tasks")


class Shop(InMemoryUnitOfWork):
    """A typed unit of work: its repository is declared, not registered by name."""

    tasks = repository(TaskRepository)


@pytest.mark.usefixtures("instant")
def test_declared_repository_is_built_once_per_attempt_and_closed_with_it() -> None:
    """repository(...) builds one repository per attempt, which refuses work once it ended."""
    runner = Shop.factory()
    built: list[TaskRepository] = []

    def op(uow: Shop) -> TaskRepository:
        built.extend([uow.tasks, uow.tasks])
        uow.tasks.add(Task(name="typed"))
        return uow.tasks

    kept = runner.run(op)
    assert built[0] is built[1] is kept
    assert committed_names(runner) == ["typed"]
    with pytest.raises(UnitOfWorkClosedError):
        kept.all()


@pytest.mark.usefixtures("instant")
def test_declared_repository_cannot_be_replaced() -> None:
    """Assigning to a declared repository is an AttributeError naming it."""

    def replace(uow: Shop) -> None:
        uow.tasks = None  # type: ignore[assignment]  # the mistake under test: mypy refuses it too

    with pytest.raises(AttributeError, match="'tasks'"):
        Shop.factory().run(replace)


def test_in_memory_units_are_made_by_the_backend() -> None:
    """An in-memory unit of work built by hand, without the backend's working copy, is refused."""
    with pytest.raises(TypeError, match=r"InMemoryBackend\.begin"):
        InMemoryUnitOfWork(AttemptInfo("op", 1, 0.0))
