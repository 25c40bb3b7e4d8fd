"""Fixtures of the unit tests: in-memory runners with retries made instant, a fake clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy.exc as sa_exc

from adapters.memory import InMemoryBackend, InMemoryRepository, InMemoryUnitOfWork
from uow import RetryPolicy, Runner
from uow.testing import set_testing

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Iterator

LOGGER = "retrying_uow"

CAPPED = RetryPolicy(attempts=5)
"""Five attempts for every kind: for tests about giving up after a count.

By default only deadlocks and lock waits have a count; lost connections are retried
until the time budget is spent, which instant retries never spend.
"""


@dataclass
class Task:
    """A tiny entity for the in-memory repository."""

    name: str
    id: int | None = None
    done: bool = False


class TaskRepository(InMemoryRepository[Task]):
    """The repository the tests' units of work carry as ``uow.tasks``."""


@dataclass
class FakeClock:
    """A monotonic clock that only moves when told to, or when the runner sleeps."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(float(seconds))
        self.now += seconds


def make_runner(policy: RetryPolicy | None = None, **options: Any) -> Runner[Any]:
    """A runner on a fresh in-memory store with a ``tasks`` repository."""
    if policy is not None:
        options["policy"] = policy
    return InMemoryUnitOfWork.factory(repositories={"tasks": TaskRepository}, **options)


def clocked_runner(
    clock: FakeClock, policy: RetryPolicy | None = None, **options: Any
) -> Runner[Any]:
    """A runner measuring time with ``clock`` and sleeping on it (testing mode must be off)."""
    return make_runner(policy, clock=clock, sleep=clock.sleep, **options)


def backend_of(runner: Any) -> InMemoryBackend:
    backend = runner.backend
    assert isinstance(backend, InMemoryBackend)
    return backend


def committed_names(runner: Any) -> list[str]:
    """Names of the committed tasks, read from the store without running an operation."""
    return sorted(
        task.name for task in backend_of(runner).tables.get("TaskRepository", {}).values()
    )


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == level]


def wrapped(
    orig: Exception, cls: type[sa_exc.DBAPIError] | None = None, *, invalidated: bool = False
) -> sa_exc.DBAPIError:
    """Wrap a driver error the way SQLAlchemy does (class named after the driver's)."""
    if cls is None:
        cls = getattr(sa_exc, type(orig).__name__)
    return cls(
        "UPDATE tasks SET done = %(done)s WHERE id = %(id)s",
        {"done": 1, "id": 7},
        orig,
        connection_invalidated=invalidated,
    )


def create_task(uow: Any, name: str) -> Task:
    """A domain service: adds one task and returns it."""
    task: Task = uow.tasks.add(Task(name=name))
    return task


def run_call(runner: Runner[Any], name: str) -> Task:
    return runner.run(create_task, name)


def run_decorated(runner: Runner[Any], name: str) -> Task:
    return runner.operation(create_task)(name)


def run_block(runner: Runner[Any], name: str) -> Task:
    for attempt in runner.attempts("create_task"):
        with attempt as unit:
            task = create_task(unit, name)
    return task


ENTRY_POINTS: list[Callable[[Runner[Any], str], Task]] = [run_call, run_decorated, run_block]
ENTRY_IDS = ["run", "operation", "attempts"]


@pytest.fixture
def instant() -> Iterator[None]:
    """Testing mode on: the runner's waits are no-ops."""
    with set_testing(True):
        yield


@pytest.fixture
def units() -> Iterator[Runner[Any]]:
    """A runner on a fresh in-memory store with a ``tasks`` repository, retries instant.

    Testing mode without its default cap, so the policy's own bounds are what is tested.
    """
    with set_testing(True, attempts=None):
        yield make_runner()


@pytest.fixture
def capped() -> Iterator[Runner[Any]]:
    """As ``units``, with five attempts for every kind (:data:`CAPPED`)."""
    with set_testing(True):
        yield make_runner(CAPPED)


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock; give it to a runner with :func:`clocked_runner` (``clock=``, ``sleep=``)."""
    return FakeClock()


@pytest.fixture
def anyio_backend() -> str:
    """The async tests run on asyncio."""
    return "asyncio"
