"""A domain service on the unit of work, wired once to SQLAlchemy and once to memory.

The service functions (``create_placeholder``, ``complete``) receive a unit of work with a
``tasks`` repository: no session, no engine, no commit, no retry. The runner around them owns
all of that, so the same service runs on a database and, for unit tests, in memory. Domain
events it records are published once, after the commit of the attempt that succeeded.

The service says what it needs in a protocol of its own (``TasksUnitOfWork``); each store
has a unit-of-work class that declares its repository with ``repository(...)``, and mypy
checks that both satisfy the protocol.

    python examples/domain_service.py                          # SQLite in memory
    DATABASE_URL=mysql+pymysql://app:pw@127.0.0.1:3306/app python examples/domain_service.py
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from adapters.memory import InMemoryRepository, InMemoryUnitOfWork
from adapters.sqlalchemy import SqlAlchemyRepository, SqlAlchemyUnitOfWork
from uow import ErrorKind, RetryDetails, RetryPolicy, Runner, UnitOfWork, repository, retry_details
from uow.testing import Fault, inject, set_testing

if TYPE_CHECKING:
    from collections.abc import Sequence


class Base(DeclarativeBase):
    pass


class Task(Base):
    __tablename__ = "example_tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str | None] = mapped_column(String(200))


@dataclass(frozen=True)
class TaskCompleted:
    task_id: int
    outcome: str


# The port: what the service needs from its unit of work, whatever stores the tasks.
class TaskRepository(Protocol):
    def add(self, entity: Task) -> Task: ...
    def get(self, ident: Any) -> Task | None: ...
    def all(self) -> Sequence[Task]: ...
    def by_name(self, name: str) -> Task | None: ...


class TasksUnitOfWork(UnitOfWork, Protocol):
    # A read-only property: each store's unit of work has its own repository class.
    @property
    def tasks(self) -> TaskRepository: ...


# The domain service: plain functions of a unit of work.
def create_placeholder(uow: TasksUnitOfWork, name: str) -> Task:
    if uow.tasks.by_name(name) is not None:
        raise ValueError(f"a task named {name!r} exists")  # permanent: never retried
    return uow.tasks.add(Task(name=name, status="pending"))


def complete(uow: TasksUnitOfWork, task_id: int, outcome: str) -> Task:
    task = uow.tasks.get(task_id)
    if task is None:
        raise LookupError(f"no task {task_id}")
    task.status, task.outcome = "done", outcome
    uow.record_event(TaskCompleted(task.id, outcome))  # published after the commit
    return task


def named(uow: TasksUnitOfWork, prefix: str) -> list[Task]:
    return sorted((t for t in uow.tasks.all() if t.name.startswith(prefix)), key=lambda t: t.name)


# The adapters: a repository and a unit of work per store, both satisfying the port.
class SqlAlchemyTaskRepository(SqlAlchemyRepository[Task]):
    model = Task

    def by_name(self, name: str) -> Task | None:
        return self.session.scalars(select(Task).where(Task.name == name)).first()


class SqlAlchemyTasks(SqlAlchemyUnitOfWork):
    tasks = repository(SqlAlchemyTaskRepository)


class InMemoryTaskRepository(InMemoryRepository[Task]):
    def by_name(self, name: str) -> Task | None:
        return next((task for task in self.all() if task.name == name), None)


class InMemoryTasks(InMemoryUnitOfWork):
    tasks = repository(InMemoryTaskRepository)


def use_service(units: Runner[TasksUnitOfWork], prefix: str, events: list[TaskCompleted]) -> None:
    """The three entry points over one runner; the same code for both stores."""
    # 1. A call: one business operation, committed when it returns.
    task = units.run(create_placeholder, f"{prefix}-report")
    print(f"  run:       created {task.name} (id {task.id}, {task.status})")

    # 2. A decorator: calling the function runs it as an operation.
    @units.operation
    def finish(uow: TasksUnitOfWork, task_id: int) -> Task:
        return complete(uow, task_id, outcome="42 rows imported")

    done = finish(task.id)
    print(f"  operation: {done.name} is {done.status}: {done.outcome}")
    expect(events == [TaskCompleted(task.id, "42 rows imported")], "one event, after commit")
    print(f"  event:     {events[0]}")

    # 3. The block form for inline code. A nested run() joins the running unit of work:
    #    no transaction or retry of its own, so attempts never multiply.
    for attempt in units.attempts("import-batch"):
        with attempt as uow:
            parts = [create_placeholder(uow, f"{prefix}-part-{i}") for i in range(2)]
            parts.append(units.run(create_placeholder, f"{prefix}-part-2"))
    print(f"  attempts:  created {', '.join(p.name for p in parts)} in one transaction")

    # Errors come back unchanged; retry_details() tells how the operation ended.
    try:
        units.run(create_placeholder, f"{prefix}-report")
    except ValueError as error:
        details = retry_details(error)  # how the operation ended
        if details is None or details.attempt != 1:
            raise SystemExit("FAILED: expected a permanent error, not retried") from error
        print(f"  duplicate: {error} (kind={details.kind}: {details.reason})")

    tasks = units.run(named, prefix)
    names = [f"{prefix}-part-{i}" for i in range(3)] + [task.name]
    expect([t.name for t in tasks] == names, f"the tasks {names}")
    expect([t.status for t in tasks] == ["pending"] * 3 + ["done"], "the statuses")


def expect(ok: object, what: str) -> None:
    if not ok:
        raise SystemExit(f"FAILED: expected {what}")


def main() -> int:
    logging.basicConfig(format="  %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    engine = create_engine(os.environ.get("DATABASE_URL") or "sqlite://")
    Base.metadata.create_all(engine)
    print(f"SQLAlchemy on {engine.url!r}")
    sql_events: list[TaskCompleted] = []
    sql_units: Runner[TasksUnitOfWork] = SqlAlchemyTasks.factory(
        engine,
        policy=RetryPolicy(timeout=30),
        event_handlers={TaskCompleted: [sql_events.append]},
    )
    use_service(sql_units, prefix, sql_events)
    engine.dispose()

    print("in memory (what unit tests of the service use)")
    retries: list[RetryDetails] = []
    memory_events: list[TaskCompleted] = []
    memory_units: Runner[TasksUnitOfWork] = InMemoryTasks.factory(
        hooks=[retries.append],
        event_handlers={TaskCompleted: [memory_events.append]},
    )
    use_service(memory_units, prefix, memory_events)

    # Prove the service survives a rerun: a deadlock on its first statement, retried at once.
    with set_testing(True), inject(Fault.deadlock(at=1)):  # no backoff sleeps in tests
        task = memory_units.run(create_placeholder, f"{prefix}-retried")
    scheduled = [d.kind for d in retries if d.will_retry]  # hooks also see unretried errors
    expect(scheduled == [ErrorKind.DEADLOCK], "one retry, after the deadlock")
    rows = memory_units.run(named, f"{prefix}-retried")
    expect([t.name for t in rows] == [task.name], "exactly one task written")
    print(f"  retried:   {task.name} after a simulated deadlock: {len(scheduled) + 1} attempts")
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
