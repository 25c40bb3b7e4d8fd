"""Typing seen from the user's side. Only type-checked (mypy strict), never run.

Every ``# type: ignore[code]`` below marks a line mypy must reject; with
``warn_unused_ignores`` (part of strict mode) an ignore that is not needed fails the
check, so each one proves that mypy catches that mistake.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, assert_type

from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from adapters.memory import InMemoryRepository, InMemoryUnitOfWork
from adapters.sqlalchemy import (
    AsyncSqlAlchemyUnitOfWork,
    SqlAlchemyRepository,
    SqlAlchemyUnitOfWork,
    repository,
)
from uow import (
    AsyncRunner,
    Attempt,
    CommitOutcomeUnknown,
    ErrorKind,
    JoinedAttempt,
    Reason,
    RetryDetails,
    RetryHook,
    RetryPolicy,
    Runner,
    UnitOfWork,
    retry_details,
)
from uow.testing import set_testing


@dataclass
class Task:
    name: str
    id: int | None = None


class TaskRepository(InMemoryRepository[Task]):
    def by_name(self, name: str) -> Task | None:
        return next((task for task in self.all() if task.name == name), None)


class Tasks(UnitOfWork, Protocol):
    """What the domain services below need from a unit of work."""

    tasks: TaskRepository


class Shop(InMemoryUnitOfWork):
    """A typed unit of work: its repositories are declared, so mypy sees them."""

    tasks = repository(TaskRepository)


class TaskStore(Protocol):
    """A port: what a service needs of a repository, whatever the store."""

    def add(self, entity: Task) -> Task: ...
    def by_name(self, name: str) -> Task | None: ...


class TasksByPort(UnitOfWork, Protocol):
    """A service's protocol over a port: the repository is a read-only property."""

    @property
    def tasks(self) -> TaskStore: ...


class TasksByPortAttribute(UnitOfWork, Protocol):
    """The same as a plain attribute: settable, so invariant; no adapter's class fits."""

    tasks: TaskStore


def on_retry(details: RetryDetails) -> None:
    assert_type(details.attempt, int)
    assert_type(details.kind, ErrorKind)
    assert_type(details.errno, int | None)


hook: RetryHook = on_retry
assert_type(Shop.factory(), Runner[Shop])
units: Runner[Tasks] = Shop.factory(policy=RetryPolicy(attempts=3, timeout=10), hooks=[hook])
by_port: Runner[TasksByPort] = Shop.factory()
by_attribute: Runner[TasksByPortAttribute] = Shop.factory()  # type: ignore[assignment]


def typo(uow: Shop) -> None:
    uow.taks.all()  # type: ignore[attr-defined]


def create_placeholder(uow: Tasks, name: str) -> Task:
    return uow.tasks.add(Task(name=name))


def count(uow: Tasks) -> int:
    return len(uow.tasks.all())


def wrong_unit(_uow: int, name: str) -> Task:
    return Task(name=name)


# run(): the result has the operation's return type; arguments are checked.
assert_type(units.run(create_placeholder, "t0001"), Task)
assert_type(units.run(count), int)
assert_type(units.run(lambda uow: uow.tasks.by_name("t0001")), Task | None)
units.run(create_placeholder, 1)  # type: ignore[arg-type]
units.run(create_placeholder)  # type: ignore[call-arg]
units.run(wrong_unit, "t0001")  # type: ignore[arg-type]


# operation(): the decorated function keeps its signature minus the unit of work.
@units.operation
def rename(uow: Tasks, task_id: int, *, name: str) -> Task | None:
    task = uow.tasks.get(task_id)
    if task is not None:
        task.name = name
    return task


assert_type(rename(1, name="t0002"), Task | None)
rename("1", name="t0002")  # type: ignore[arg-type]
rename(1, "t0002")  # type: ignore[call-arg]
rename(1, nome="t0002")  # type: ignore[call-arg]


# attempts(): the block form hands out the runner's unit-of-work type.
def block_form() -> Task:
    for attempt in units.attempts("block"):
        assert_type(attempt, Attempt[Tasks] | JoinedAttempt[Tasks])
        with attempt as uow:
            assert_type(uow, Tasks)
            task = uow.tasks.add(Task(name="t0003"))
    return task


# Per-operation settings keep the type; errors carry typed details.
strict: Runner[Tasks] = units.using(policy=units.policy.override(attempts=2), idempotent=True)
verified: Runner[Tasks] = units.using(verify=lambda uow: uow.tasks.by_name("t0001") is not None)
units.using(attempts=2)  # type: ignore[call-arg]


def give_up_reason(error: BaseException) -> str | None:
    details = retry_details(error)
    assert_type(details, RetryDetails | None)
    if isinstance(error, CommitOutcomeUnknown):
        assert_type(error.attempt, int)
    if details is not None:
        assert_type(details.reason, Reason)
        assert_type(details.max_attempts, int | None)
    return None if details is None else details.reason


# Policies are frozen; attempts may be None (bounded by the time budget only).
policy = RetryPolicy()
assert_type(policy.attempts, int | None)
policy.attempts = 3  # type: ignore[misc]


# SQLAlchemy: a typed unit of work on a session; flush() before the commit for ids.
class Row:
    id: int
    name: str


class RowRepository(SqlAlchemyRepository[Row]):
    model = Row


class Rows(SqlAlchemyUnitOfWork):
    rows = repository(RowRepository)


rows = Rows.factory(create_engine("sqlite://"))
assert_type(rows, Runner[Rows])


def add_row(uow: Rows, name: str) -> int:
    assert_type(uow.session, Session)
    assert_type(uow.rows.all(), Sequence[Row])
    row = uow.rows.add(Row())
    row.name = name
    uow.flush()  # the INSERT now: the id is known before the commit
    return row.id


assert_type(rows.run(add_row, "r1"), int)


# The async runner: the same shapes, awaited.
class AsyncRows(AsyncSqlAlchemyUnitOfWork):
    pass


async_rows = AsyncRows.factory(create_async_engine("sqlite+aiosqlite://"))
assert_type(async_rows, AsyncRunner[AsyncRows])


async def count_async(uow: AsyncRows) -> int:
    await uow.flush()
    return 0


async def use_async() -> int:
    return await async_rows.run(count_async)


with set_testing(True, attempts=1) as state:
    assert_type(state.attempts, int | None)
