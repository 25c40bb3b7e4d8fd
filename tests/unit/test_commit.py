"""Lost COMMITs: markers, verification and idempotent reruns decide instead of guessing."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest

from adapters.memory import InMemoryBackend, InMemoryUnitOfWork, SimulatedError
from tests.unit.conftest import Task, TaskRepository, backend_of, make_runner
from uow import AttemptInfo, CommitOutcomeUnknown, ErrorKind, Runner, retry_details
from uow._commit import CommitOutcome, log_resolution, resolve_commit
from uow.testing import set_testing

if TYPE_CHECKING:
    from collections.abc import Iterator

LOGGER = "retrying_uow"


def create_task(uow: Any, name: str) -> Task:
    return uow.tasks.add(Task(name=name))


def names_in(backend: InMemoryBackend) -> list[str]:
    return sorted(task.name for task in backend.tables.get("TaskRepository", {}).values())


def resolution_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and "lost COMMIT" in r.getMessage()]


@pytest.fixture
def marked() -> Iterator[Runner[Any]]:
    """A runner on an in-memory store with commit markers on, retries instant."""
    with set_testing(True):
        yield InMemoryUnitOfWork.factory(
            repositories={"tasks": TaskRepository}, commit_markers=True
        )


# --- through the runner --------------------------------------------------------------------


def test_marker_says_committed_returns_the_result_without_rerun(
    marked: Runner[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A lost COMMIT that the marker shows as committed returns the result, written once."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    backend = backend_of(marked)
    backend.fail(ErrorKind.DISCONNECT, errno=2013, at="commit", committed=True)
    task = marked.run(create_task, "paid")
    assert task.name == "paid"
    assert backend.attempts == 1
    assert names_in(backend) == ["paid"]
    (record,) = resolution_records(caplog)
    assert record.uow_commit_outcome == "committed"  # type: ignore[attr-defined]
    assert record.uow_commit_source == "commit marker"  # type: ignore[attr-defined]


def test_marker_says_absent_reruns(marked: Runner[Any]) -> None:
    """A lost COMMIT that the marker shows as not applied is rerun: the data ends up once."""
    backend = backend_of(marked)
    backend.fail(ErrorKind.DISCONNECT, errno=2013, at="commit", committed=False)
    task = marked.run(create_task, "paid")
    assert task.name == "paid"
    assert backend.attempts == 2
    assert backend.commits == 1
    assert names_in(backend) == ["paid"]


def test_verification_says_committed_returns_the_result(units: Runner[Any]) -> None:
    """verify() finding the writes resolves a lost COMMIT as committed: no rerun, no error."""
    backend = backend_of(units)
    seen: list[Any] = []

    def paid_exists(uow: Any) -> bool:
        seen.append(uow)
        assert uow.active
        return any(t.name == "paid" for t in uow.tasks.all())

    backend.fail(ErrorKind.DISCONNECT, at="commit", committed=True)
    task = units.using(verify=paid_exists).run(create_task, "paid")
    assert task.name == "paid"
    assert len(seen) == 1
    assert names_in(backend) == ["paid"]


def test_verification_says_absent_reruns(units: Runner[Any]) -> None:
    """verify() not finding the writes reruns the operation, which then commits once."""
    backend = backend_of(units)
    calls = 0

    def op(uow: Any) -> Task:
        nonlocal calls
        calls += 1
        return create_task(uow, "paid")

    backend.fail(ErrorKind.DISCONNECT, at="commit", committed=False)
    units.using(verify=lambda uow: bool(uow.tasks.all())).run(op)
    assert calls == 2
    assert names_in(backend) == ["paid"]


def test_failing_verification_leaves_the_outcome_unknown(
    units: Runner[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A verification that raises cannot tell: CommitOutcomeUnknown, and the log says why."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    backend = backend_of(units)

    def broken(_uow: Any) -> bool:
        raise LookupError("verification bug")

    backend.fail(ErrorKind.DISCONNECT, at="commit", committed=True)
    with pytest.raises(CommitOutcomeUnknown):
        units.using(verify=broken).run(create_task, "paid")
    (record,) = resolution_records(caplog)
    assert "outcome unknown" in record.getMessage()
    assert "LookupError" in record.getMessage()


def test_unresolved_lost_commit_is_logged_as_unknown(
    units: Runner[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Without marker or verification the log says the outcome is unknown (source: none)."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    backend_of(units).fail(ErrorKind.DISCONNECT, at="commit", committed=True)
    with pytest.raises(CommitOutcomeUnknown) as excinfo:
        units.run(create_task, "x")
    (record,) = resolution_records(caplog)
    assert record.uow_commit_outcome == "unknown"  # type: ignore[attr-defined]
    assert record.uow_commit_source == "none"  # type: ignore[attr-defined]
    details = retry_details(excinfo.value)
    assert details is not None
    assert details.attempt == 1


def test_marker_wins_over_verification(marked: Runner[Any]) -> None:
    """With commit markers on, the verification is not even asked."""
    asked: list[bool] = []

    def verify(_uow: Any) -> bool:
        asked.append(True)
        return False

    backend_of(marked).fail(ErrorKind.DISCONNECT, at="commit", committed=True)
    marked.using(verify=verify).run(create_task, "x")
    assert asked == []


def test_idempotent_rerun_after_marker_says_absent_is_not_needed(marked: Runner[Any]) -> None:
    """A marker verdict is used even for idempotent operations (no needless duplicate)."""
    backend = backend_of(marked)
    backend.fail(ErrorKind.DISCONNECT, at="commit", committed=True)
    marked.using(idempotent=True).run(create_task, "x")
    assert backend.attempts == 1
    assert names_in(backend) == ["x"]


def test_known_error_at_commit_skips_resolution(
    units: Runner[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A deadlock at COMMIT is the server's answer: no resolution is attempted, it reruns."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    backend = backend_of(units)
    backend.fail(ErrorKind.DEADLOCK, errno=1213, at="commit")
    units.using(verify=lambda _uow: pytest.fail("not asked")).run(create_task, "x")
    assert resolution_records(caplog) == []
    assert backend.attempts == 2


def test_interrupted_commit_resolved_absent_is_raised_as_is(units: Runner[Any]) -> None:
    """An interrupted COMMIT shown not applied is the original (not retried) error, not unknown."""
    backend = backend_of(units)
    backend.fail(ErrorKind.INTERRUPTED, errno=1317, at="commit", committed=False)
    calls: list[str] = []

    def op(uow: Any) -> None:
        calls.append("op")
        create_task(uow, "x")

    with pytest.raises(SimulatedError):
        units.using(verify=lambda _uow: False).run(op)
    assert calls == ["op"]


# --- resolve_commit on its own -------------------------------------------------------------


class StubTransaction:
    """Answers committed() as told, or raises."""

    def __init__(self, answer: bool | BaseException | None) -> None:
        self.answer = answer
        self.timeouts: list[float] = []

    def committed(self, timeout: float) -> bool | None:
        self.timeouts.append(timeout)
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


def resolve(answer: bool | BaseException | None, verify: Any = None) -> CommitOutcome:
    backend = InMemoryBackend({"tasks": TaskRepository})
    return resolve_commit(StubTransaction(answer), backend, verify, timeout=2.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("answer", [True, False])
def test_marker_answer_is_the_outcome(answer: bool) -> None:
    """A marker that can tell decides, with source 'commit marker'."""
    assert resolve(answer) == CommitOutcome(answer, "commit marker")


def test_marker_lookup_failure_is_unknown() -> None:
    """A marker lookup that fails leaves the outcome unknown and keeps the error."""
    error = ConnectionError("still down")
    outcome = resolve(error, verify=lambda _uow: True)
    assert outcome.committed is None
    assert outcome.source == "commit marker"
    assert outcome.error is error


def test_no_marker_and_no_verification_is_unknown() -> None:
    """Nothing to ask: the outcome is unknown, source 'none'."""
    assert resolve(None) == CommitOutcome(None, "none")


def test_verification_result_is_made_boolean() -> None:
    """A truthy verification result means committed."""
    outcome = resolve(None, verify=lambda _uow: ["row"])
    assert outcome == CommitOutcome(True, "verification")


def test_timeout_is_passed_to_the_marker_lookup() -> None:
    """The lookup gets the remaining time it may take."""
    transaction = StubTransaction(True)
    resolve_commit(transaction, InMemoryBackend(), None, timeout=2.5)  # type: ignore[arg-type]
    assert transaction.timeouts == [2.5]


def test_resolution_log_has_structured_fields(caplog: pytest.LogCaptureFixture) -> None:
    """The resolution WARNING names operation, attempt, verdict and source."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    log_resolution("pay", 3, CommitOutcome(False, "verification"))
    (record,) = resolution_records(caplog)
    assert (
        record.getMessage() == "lost COMMIT of pay attempt 3: outcome absent (source: verification)"
    )
    assert record.uow_operation == "pay"  # type: ignore[attr-defined]
    assert record.uow_attempt == 3  # type: ignore[attr-defined]


@pytest.mark.usefixtures("instant")
def test_memory_transaction_without_markers_cannot_tell() -> None:
    """The in-memory adapter answers committed() only when markers are on."""
    plain = InMemoryBackend()
    with_markers = InMemoryBackend(commit_markers=True)
    info = AttemptInfo("op", 1, 0.0)
    assert plain.begin(info).committed(1.0) is None
    transaction = with_markers.begin(info)
    assert transaction.committed(1.0) is False
    transaction.commit()
    assert transaction.committed(1.0) is True


def test_make_runner_helper_has_no_markers() -> None:
    """Sanity: the default test runner does not resolve lost COMMITs by markers."""
    assert backend_of(make_runner()).commit_markers is False
