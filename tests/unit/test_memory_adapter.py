"""The in-memory adapter is a faithful fake: flush, identity and unique keys as on a database."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError

from adapters.memory import InMemoryRepository, InMemoryUnitOfWork
from tests.unit.conftest import Task, TaskRepository, backend_of, committed_names, create_task
from uow import ErrorKind, Runner, retry_details
from uow.testing import Fault, inject, set_testing


class UniqueTasks(InMemoryRepository[Task]):
    """Task names are unique, as with a UNIQUE index."""

    table_name = "TaskRepository"
    unique = ("name",)


@dataclass
class Tag:
    label: str
    id: int | None = None


class TagRepository(InMemoryRepository[Tag]):
    pass


@pytest.fixture
def shop() -> Any:
    """A runner with a unique-name view of the tasks table and a tags repository."""
    with set_testing(True):
        yield InMemoryUnitOfWork.factory(
            repositories={"tasks": TaskRepository, "unique": UniqueTasks, "tags": TagRepository}
        )


def test_ids_are_assigned_at_the_flush_not_at_add(units: Runner[Any]) -> None:
    """add() only stages: the entity has no id until uow.flush() writes it."""
    seen: list[int | None] = []

    def op(uow: Any) -> Task:
        task: Task = uow.tasks.add(Task(name="a"))
        seen.append(task.id)
        uow.flush()
        seen.append(task.id)
        return task

    task = units.run(op)
    assert seen == [None, task.id]
    assert task.id is not None


def test_a_read_flushes_first(units: Runner[Any]) -> None:
    """get() and all() flush what is pending, so they see it and it has its id."""

    def op(uow: Any) -> tuple[int | None, list[str]]:
        task = uow.tasks.add(Task(name="a"))
        names = [t.name for t in uow.tasks.all()]
        return task.id, names

    ident, names = units.run(op)
    assert ident is not None
    assert names == ["a"]


def test_the_commit_flushes_what_is_left(units: Runner[Any]) -> None:
    """An entity only added gets its id at the commit, and the caller sees it."""
    task = units.run(create_task, "a")
    assert task.id is not None
    assert committed_names(units) == ["a"]


def test_ids_are_never_reused_after_a_rollback(units: Runner[Any]) -> None:
    """Like an auto-increment column, an id taken by a failed attempt is not given again."""
    with inject(Fault.disconnect(at=2)):  # the flush (1) gave an id; the read (2) fails
        task = units.run(lambda uow: (uow.tasks.add(Task(name="a")), uow.tasks.all())[0])
    assert task.id == 2


def test_get_returns_the_same_object_within_an_attempt(units: Runner[Any]) -> None:
    """Within one attempt, reading an entity twice gives the very object added or read before."""
    stored = units.run(create_task, "stored")

    def op(uow: Any) -> bool:
        added = uow.tasks.add(Task(name="new"))
        uow.flush()
        same_added = uow.tasks.get(added.id) is added
        first, second = uow.tasks.get(stored.id), uow.tasks.get(stored.id)
        in_all = next(t for t in uow.tasks.all() if t.id == stored.id)
        return same_added and first is second is in_all

    assert units.run(op) is True


def test_objects_of_another_attempt_are_copies(units: Runner[Any]) -> None:
    """A returned entity is detached: changing it after the operation changes nothing stored."""
    task = units.run(create_task, "x")
    task.name = "changed"
    assert committed_names(units) == ["x"]
    assert units.run(lambda uow: uow.tasks.get(task.id)) is not task


def test_remove_deletes_on_commit(units: Runner[Any]) -> None:
    """remove() stages a deletion that the commit makes visible."""
    task = units.run(create_task, "x")
    units.run(lambda uow: uow.tasks.remove(uow.tasks.get(task.id)))
    assert committed_names(units) == []
    assert units.run(lambda uow: uow.tasks.get(task.id)) is None


def test_duplicate_unique_value_fails_at_the_flush(shop: Runner[Any]) -> None:
    """Two rows with one unique value: IntegrityError at the flush, not at add; no commit."""
    reached: list[str] = []

    def op(uow: Any) -> None:
        uow.unique.add(Task(name="dup"))
        uow.unique.add(Task(name="dup"))
        reached.append("both added")
        uow.flush()
        reached.append("flushed")

    with pytest.raises(IntegrityError, match="duplicate name") as excinfo:
        shop.run(op)
    assert reached == ["both added"]
    assert backend_of(shop).commits == 0
    assert committed_names(shop) == []
    details = retry_details(excinfo.value)
    assert details is not None
    assert (details.kind, details.attempt) == (ErrorKind.PERMANENT, 1)


def test_duplicate_of_a_committed_row_fails_at_the_commit_flush(shop: Runner[Any]) -> None:
    """A clash with a stored row is found by the flush before COMMIT: nothing of it is committed."""
    shop.run(lambda uow: uow.unique.add(Task(name="taken")))
    with pytest.raises(IntegrityError):
        shop.run(lambda uow: [uow.tags.add(Tag("first")), uow.unique.add(Task(name="taken"))])
    assert backend_of(shop).commits == 1
    assert backend_of(shop).tables.get("TagRepository", {}) == {}


def test_duplicate_primary_key_fails_at_the_flush(units: Runner[Any]) -> None:
    """Adding an entity whose id is taken is an IntegrityError, as an INSERT would be."""
    units.run(lambda uow: uow.tasks.add(Task(name="first", id=7)))
    with pytest.raises(IntegrityError, match="duplicate primary key"):
        units.run(lambda uow: uow.tasks.add(Task(name="second", id=7)))
    assert committed_names(units) == ["first"]


def test_repositories_can_share_a_table(shop: Runner[Any]) -> None:
    """table_name makes two repositories work on one table, in the same attempt."""

    def op(uow: Any) -> list[str]:
        uow.tasks.add(Task(name="via tasks"))
        return [t.name for t in uow.unique.all()]

    assert shop.run(op) == ["via tasks"]


def test_only_reads_and_flushes_are_statements(units: Runner[Any]) -> None:
    """add() and remove() count nothing; a read counts one, a flush with changes one."""

    def op(uow: Any) -> None:
        uow.tasks.add(Task(name="a"))
        uow.tasks.add(Task(name="b"))
        uow.flush()  # 1
        uow.flush()  # nothing pending: not a statement
        uow.tasks.all()  # 2
        uow.tasks.remove(uow.tasks.all()[0])  # 3: the read
        uow.tasks.get(1)  # loaded already: no flush, no read (as Session.get)
        # 4: the commit's flush of the removal

    with inject() as injection:
        units.run(op)
    assert injection.statements("test_only_reads_and_flushes_are_statements.<locals>.op") == 4
    assert committed_names(units) == ["b"]
