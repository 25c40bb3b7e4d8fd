"""A user's tests of the domain service in domain_service.py, with the retrying_uow plugin.

The plugin comes with the package (pytest loads it by itself) and offers opt-in fixtures:
``uow_instant_retries`` (no backoff sleeps), ``uow_inject`` (a lost connection, deadlock
or lost COMMIT at statement N) and ``uow_rerun_check`` (a fault at every point in turn;
the test fails listing the points after which a rerun changed anything).

    pytest examples/test_domain_service_example.py
"""
# ruff: noqa: S101, PLR2004 -- a pytest module: plain asserts on literal values, as in tests/

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import create_engine, delete, insert, select

from examples.domain_service import (
    Base,
    SqlAlchemyTasks,
    Task,
    TaskCompleted,
    TasksUnitOfWork,
    complete,
    create_placeholder,
)
from uow.testing import Fault

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from sqlalchemy.engine import Engine

    from uow import Runner
    from uow.testing import Injection, RerunReport

    InjectFixture = Callable[..., Injection]
    RerunCheckFixture = Callable[..., RerunReport]


class Database:
    """The starting state of every run of the rerun check: one pending task, no event."""

    def __init__(self, engine: Engine, events: list[TaskCompleted]) -> None:
        self.engine = engine
        self.events = events

    def restore(self) -> None:
        self.events.clear()
        with self.engine.begin() as connection:
            connection.execute(delete(Task))
            connection.execute(insert(Task).values(id=1, name="seed", status="pending"))

    def snapshot(self) -> list[tuple[Any, ...]]:
        """What must be the same after a rerun (not auto-increment ids: reruns consume them)."""
        with self.engine.connect() as connection:
            query = select(Task.name, Task.status, Task.outcome).order_by(Task.name)
            return [tuple(row) for row in connection.execute(query)]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    # A file, not "sqlite://": a lost connection must not take the database with it.
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def events() -> list[TaskCompleted]:
    return []


@pytest.fixture
def units(engine: Engine, events: list[TaskCompleted]) -> Runner[SqlAlchemyTasks]:
    return SqlAlchemyTasks.factory(engine, event_handlers={TaskCompleted: [events.append]})


@pytest.fixture
def database(engine: Engine, events: list[TaskCompleted]) -> Database:
    return Database(engine, events)


@pytest.mark.usefixtures("uow_instant_retries")
def test_create_survives_a_lost_connection(
    uow_inject: InjectFixture, units: Runner[SqlAlchemyTasks], database: Database
) -> None:
    """Statement 1 is the duplicate check, statement 2 the INSERT: losing it reruns all."""
    database.restore()
    injection = uow_inject(Fault.disconnect(at=2))
    task = units.run(create_placeholder, "report")
    assert task.name == "report"
    assert injection.attempts("create_placeholder") == 2
    assert [row[0] for row in database.snapshot()] == ["report", "seed"]


@pytest.mark.usefixtures("uow_instant_retries")
def test_complete_publishes_its_event_once(
    uow_inject: InjectFixture,
    units: Runner[SqlAlchemyTasks],
    events: list[TaskCompleted],
    database: Database,
) -> None:
    """Two lost connections later, the event is published once, after the commit."""
    database.restore()
    uow_inject(Fault.disconnect(at=1, times=2))  # the first two attempts fail at once
    units.run(complete, 1, "42 rows")
    assert events == [TaskCompleted(1, "42 rows")]


def test_service_operations_are_rerun_safe(
    uow_rerun_check: RerunCheckFixture,
    units: Runner[SqlAlchemyTasks],
    events: list[TaskCompleted],
    database: Database,
) -> None:
    """Whatever statement a fault hits, the rerun leaves the same rows, result and events."""
    uow_rerun_check(
        units,
        create_placeholder,
        "report",
        snapshot=database.snapshot,
        restore=database.restore,
        result=lambda task: (task.name, task.status),
    )
    uow_rerun_check(
        units,
        complete,
        1,
        "42 rows",
        snapshot=database.snapshot,
        restore=database.restore,
        side_effects=lambda: list(events),
        result=lambda task: task.outcome,
    )


def test_the_check_catches_a_mail_sent_inside_the_operation(
    uow_rerun_check: RerunCheckFixture, units: Runner[SqlAlchemyTasks], database: Database
) -> None:
    """Mail sent from inside the unit of work goes out again when the INSERT is lost."""
    outbox: list[str] = []

    def create_and_mail(uow: TasksUnitOfWork, name: str) -> Task:
        task = create_placeholder(uow, name)
        outbox.append(f"created {name}")  # belongs in an event handler, after the commit
        return task

    def restore() -> None:
        database.restore()
        outbox.clear()

    with pytest.raises(AssertionError, match=r"UNSAFE +disconnect \(2013\) at statement 2"):
        uow_rerun_check(
            units,
            create_and_mail,
            "report",
            snapshot=database.snapshot,
            restore=restore,
            side_effects=lambda: list(outbox),
        )


if __name__ == "__main__":  # `python examples/test_domain_service_example.py` runs it too
    import subprocess
    import sys

    # In a fresh interpreter: pytest must load the plugin before the library is imported.
    sys.exit(subprocess.call([sys.executable, "-m", "pytest", __file__, "-q"]))  # noqa: S603
