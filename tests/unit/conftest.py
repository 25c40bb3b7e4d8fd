"""Fixtures of the unit tests: an in-memory runner with retries made instant, a fake clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from adapters.memory import InMemoryBackend, InMemoryRepository, InMemoryUnitOfWork
from uow import RetryPolicy, Runner, _runner
from uow.testing import set_testing

if TYPE_CHECKING:
    from collections.abc import Iterator


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


@pytest.fixture
def instant() -> Iterator[None]:
    """Testing mode on: the runner's waits are no-ops."""
    with set_testing(True):
        yield


def make_runner(policy: RetryPolicy | None = None, **kwargs: Any) -> Runner[Any]:
    return InMemoryUnitOfWork.factory(
        repositories={"tasks": TaskRepository}, policy=policy, **kwargs
    )


def backend_of(runner: Runner[Any]) -> InMemoryBackend:
    backend = runner.backend
    assert isinstance(backend, InMemoryBackend)
    return backend


@pytest.fixture
def units() -> Iterator[Runner[Any]]:
    """A runner on a fresh in-memory store with a ``tasks`` repository, retries instant."""
    with set_testing(True):
        yield make_runner()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """A fake clock; the runner's sleep advances it instead of sleeping.

    Install it on a runner with ``runner._clock = clock``.
    """
    fake = FakeClock()
    monkeypatch.setattr(_runner, "sleep", fake.sleep)
    return fake
