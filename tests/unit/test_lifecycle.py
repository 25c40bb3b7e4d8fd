"""The end of an attempt: the runner prepares, commits or rolls back, and always closes."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.memory import InMemoryBackend, SimulatedError
from tests.unit.conftest import TaskRepository, create_task
from uow import AttemptInfo, Classification, CommitOutcomeUnknown, ErrorKind, Runner
from uow.testing import Fault, inject


class RecordingBackend:
    """An in-memory backend whose transactions log what the runner asks of them."""

    def __init__(self) -> None:
        self.inner = InMemoryBackend({"tasks": TaskRepository})
        self.calls: list[str] = []
        self.prepare_errors: list[BaseException] = []

    @property
    def database(self) -> object:
        return self.inner.database

    def begin(self, attempt: AttemptInfo) -> Any:
        self.calls.append("begin")
        return RecordedTransaction(self, self.inner.begin(attempt))

    def join(self, transaction: Any) -> Any:
        return self.inner.join(transaction.transaction)

    def classify(self, error: BaseException) -> Classification:
        return self.inner.classify(error)


class RecordedTransaction:
    def __init__(self, backend: RecordingBackend, transaction: Any) -> None:
        self.backend = backend
        self.transaction = transaction
        self.unit = transaction.unit

    @property
    def events(self) -> Any:
        return self.transaction.events

    @property
    def errors(self) -> Any:
        return self.transaction.errors

    @property
    def wrote(self) -> bool:
        wrote: bool = self.transaction.wrote
        return wrote

    def prepare(self) -> None:
        self.backend.calls.append("prepare")
        if self.backend.prepare_errors:
            raise self.backend.prepare_errors.pop(0)
        self.transaction.prepare()

    def commit(self) -> None:
        self.backend.calls.append("commit")
        self.transaction.commit()

    def rollback(self) -> None:
        self.backend.calls.append("rollback")
        self.transaction.rollback()

    def close(self) -> None:
        self.backend.calls.append("close")
        self.transaction.close()

    def committed(self, timeout: float) -> bool | None:
        self.backend.calls.append("committed?")
        answer: bool | None = self.transaction.committed(timeout)
        return answer


def read_tasks(uow: Any) -> list[Any]:
    """One read: a fault at statement 1 strikes inside the operation's own code."""
    tasks: list[Any] = uow.tasks.all()
    return tasks


@pytest.fixture
def recording() -> RecordingBackend:
    return RecordingBackend()


@pytest.fixture
def runner(recording: RecordingBackend, instant: None) -> Runner[Any]:
    del instant
    return Runner(recording)


def test_success_prepares_then_commits_then_closes(
    recording: RecordingBackend, runner: Runner[Any]
) -> None:
    """A returning operation is prepared (flushed), committed and closed, in that order."""
    runner.run(create_task, "ok")
    assert recording.calls == ["begin", "prepare", "commit", "close"]
    assert recording.inner.commits == 1


def test_failure_in_the_operation_rolls_back_without_preparing(
    recording: RecordingBackend, runner: Runner[Any]
) -> None:
    """An error raised by the operation's code rolls back and closes; the rerun commits."""
    with inject(Fault.disconnect(at=1)):
        runner.run(read_tasks)
    assert recording.calls == [
        *("begin", "rollback", "close"),
        *("begin", "prepare", "commit", "close"),
    ]


def test_failure_at_prepare_rolls_back_and_reruns_without_commit(
    recording: RecordingBackend, runner: Runner[Any]
) -> None:
    """An error while flushing (before COMMIT) is known to roll back: no commit, a clean rerun."""
    recording.prepare_errors.append(SimulatedError(ErrorKind.DEADLOCK, 1213))
    assert runner.run(create_task, "x").name == "x"
    assert recording.calls == [
        *("begin", "prepare", "rollback", "close"),
        *("begin", "prepare", "commit", "close"),
    ]
    assert recording.inner.commits == 1


def test_permanent_failure_at_prepare_is_raised_as_is(
    recording: RecordingBackend, runner: Runner[Any]
) -> None:
    """A permanent error at the flush (a duplicate key, say) is raised unchanged, uncommitted."""
    error = SimulatedError(ErrorKind.PERMANENT, 1062)
    recording.prepare_errors.append(error)
    with pytest.raises(SimulatedError) as excinfo:
        runner.run(create_task, "dup")
    assert excinfo.value is error
    assert "commit" not in recording.calls
    assert recording.calls[-2:] == ["rollback", "close"]


def test_failed_commit_is_rolled_back_and_closed_before_resolution(
    recording: RecordingBackend, runner: Runner[Any]
) -> None:
    """A lost COMMIT is rolled back and closed first; only then is the outcome looked up."""
    with pytest.raises(CommitOutcomeUnknown), inject(Fault.lost_commit(committed=True)):
        runner.run(create_task, "lost")
    assert recording.calls == ["begin", "prepare", "commit", "rollback", "close", "committed?"]


def test_interrupt_rolls_back_and_closes(recording: RecordingBackend, runner: Runner[Any]) -> None:
    """A KeyboardInterrupt inside the operation still rolls back and closes the attempt."""

    def interrupted(_uow: Any) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.run(interrupted)
    assert recording.calls == ["begin", "rollback", "close"]


def test_unit_of_work_knows_its_attempt(units: Runner[Any]) -> None:
    """uow.attempt tells the operation name, the attempt number and the deadline."""
    seen: list[AttemptInfo] = []

    def op(uow: Any) -> None:
        seen.append(uow.attempt)
        uow.tasks.all()

    with inject(Fault.disconnect(at=1)):
        units.run(op)
    assert [(a.operation, a.number) for a in seen] == [
        ("test_unit_of_work_knows_its_attempt.<locals>.op", 1),
        ("test_unit_of_work_knows_its_attempt.<locals>.op", 2),
    ]
    assert seen[0].deadline == seen[1].deadline
    assert seen[0].policy is units.policy


def test_runner_repr_shows_bounds_not_secrets(units: Runner[Any]) -> None:
    """repr(runner) shows the backend and the policy's bounds."""
    text = repr(units)
    assert "attempts=None" in text
    assert "timeout=30.0" in text
    assert "InMemoryBackend" in text
    assert "attempts=3" in repr(units.using(policy=units.policy.override(attempts=3)))


def test_unknown_runner_setting_is_a_type_error_naming_it() -> None:
    """A misspelt option of the runner is refused at once, by name."""
    with pytest.raises(TypeError, match="idempotnet"):
        Runner(InMemoryBackend(), idempotnet=True)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="RetryPolicy"):
        Runner(InMemoryBackend(), policy={"attempts": 3})  # type: ignore[arg-type]  # the mistake under test


def test_error_kind_prints_as_its_value() -> None:
    """str(ErrorKind.X) is the value used in logs and settings ('lock_wait')."""
    assert str(ErrorKind.LOCK_WAIT) == "lock_wait"
    assert ErrorKind("deadlock") is ErrorKind.DEADLOCK
