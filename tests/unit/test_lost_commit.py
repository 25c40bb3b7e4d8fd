"""Lost COMMITs through the runner: unknown unless a marker, a verification or idempotency tells."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest

import uow
from adapters.memory import SimulatedError
from tests.unit.conftest import (
    LOGGER,
    Task,
    backend_of,
    committed_names,
    create_task,
    make_runner,
)
from uow import CommitOutcomeUnknown, ErrorKind, Runner, UnitOfWorkClosedError, retry_details
from uow.testing import Fault, inject, set_testing

if TYPE_CHECKING:
    from collections.abc import Iterator


def resolution_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and "lost COMMIT" in r.getMessage()]


def lost_commit(kind: ErrorKind, *, committed: bool) -> Fault:
    return Fault(kind, 2013, "commit", committed=committed)


@pytest.fixture
def marked() -> Iterator[Runner[Any]]:
    """A runner on an in-memory store with commit markers on, retries instant."""
    with set_testing(True):
        yield make_runner(commit_markers=True)


# --- without anything to tell ------------------------------------------------------------------


@pytest.mark.parametrize("kind", [ErrorKind.DISCONNECT, ErrorKind.FAILOVER])
def test_lost_commit_raises_commit_outcome_unknown(units: Runner[Any], kind: ErrorKind) -> None:
    """A connection lost during COMMIT is not rerun: CommitOutcomeUnknown, chained, data once."""
    backend = backend_of(units)
    with pytest.raises(CommitOutcomeUnknown) as excinfo, inject(lost_commit(kind, committed=True)):
        units.run(create_task, "paid")
    error = excinfo.value
    assert isinstance(error.__cause__, SimulatedError)
    assert error.__cause__.kind is kind
    assert error.operation == "create_task"
    assert error.attempt == 1
    assert "COMMIT" in str(error)
    assert backend.attempts == 1
    assert backend.commits == 1
    assert committed_names(units) == ["paid"]


def test_lost_commit_that_did_not_commit_is_still_not_rerun(units: Runner[Any]) -> None:
    """The runner cannot tell a lost COMMIT that failed from one that succeeded: no rerun."""
    backend = backend_of(units)
    with pytest.raises(CommitOutcomeUnknown), inject(Fault.lost_commit(committed=False)):
        units.run(create_task, "x")
    assert backend.attempts == 1
    assert committed_names(units) == []


def test_lost_commit_of_an_idempotent_operation_reruns(units: Runner[Any]) -> None:
    """using(idempotent=True) reruns after a lost COMMIT instead of raising."""
    backend = backend_of(units)

    def upsert(uow: Any) -> Task:
        existing: Task | None = uow.tasks.get(42)
        return existing or uow.tasks.add(Task(name="singleton", id=42))

    with inject(Fault.lost_commit(committed=True)):
        task = units.using(idempotent=True).run(upsert)
    assert task.id == 42
    assert backend.attempts == 2
    assert backend.commits == 2
    assert committed_names(units) == ["singleton"]


@pytest.mark.parametrize(
    "fault",
    [
        Fault.deadlock(at="commit"),
        Fault.lock_wait(at="commit"),
        Fault(ErrorKind.UNAVAILABLE, 1040, "commit"),
    ],
    ids=str,
)
def test_known_failure_at_commit_reruns(units: Runner[Any], fault: Fault) -> None:
    """A server answer at COMMIT (deadlock, lock wait) means not committed, so it reruns."""
    backend = backend_of(units)
    with inject(fault):
        task = units.run(create_task, "t")
    assert task.name == "t"
    assert backend.attempts == 2
    assert backend.commits == 1
    assert committed_names(units) == ["t"]


def test_unresolved_lost_commit_is_logged_as_unknown(
    units: Runner[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Without marker or verification the log says the outcome is unknown (source: none)."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with pytest.raises(CommitOutcomeUnknown) as excinfo, inject(Fault.lost_commit(committed=True)):
        units.run(create_task, "x")
    (record,) = resolution_records(caplog)
    assert record.uow_commit_outcome == "unknown"  # type: ignore[attr-defined]
    assert record.uow_commit_source == "none"  # type: ignore[attr-defined]
    details = retry_details(excinfo.value)
    assert details is not None
    assert details.attempt == 1


def test_commit_outcome_unknown_is_a_library_error() -> None:
    """CommitOutcomeUnknown is a UnitOfWorkError, so callers can catch the family."""
    assert issubclass(CommitOutcomeUnknown, uow.UnitOfWorkError)
    assert issubclass(UnitOfWorkClosedError, uow.UnitOfWorkError)


# --- attempts that only read -----------------------------------------------------------------


@pytest.mark.parametrize("markers", [False, True], ids=["no markers", "markers"])
@pytest.mark.parametrize("committed", [False, True], ids=["not applied", "applied"])
@pytest.mark.parametrize("stored", [[], ["existing"]], ids=["empty store", "rows stored"])
def test_lost_commit_of_a_read_only_attempt_is_rerun(
    committed: bool,
    markers: bool,
    stored: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An attempt that wrote nothing has nothing to lose: a lost COMMIT is a plain disconnect."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    runner = make_runner(commit_markers=markers)
    backend = backend_of(runner)
    with set_testing(True):
        for name in stored:
            runner.run(create_task, name)
        with inject(Fault.lost_commit(committed=committed)):
            names = runner.run(lambda uow: [task.name for task in uow.tasks.all()])
    assert names == stored
    assert backend.attempts == len(stored) + 2
    assert resolution_records(caplog) == []
    assert "kind=disconnect" in caplog.records[-1].getMessage()


def test_lost_commit_of_a_read_only_block_is_rerun(units: Runner[Any]) -> None:
    """The block form reruns a read-only attempt whose COMMIT was lost, and keeps its result."""
    with inject(Fault.lost_commit(committed=True)):
        for attempt in units.attempts("count_tasks"):
            with attempt as unit:
                count = len(unit.tasks.all())
    assert count == 0
    assert backend_of(units).attempts == 2


# --- markers -----------------------------------------------------------------------------------


def test_marker_says_committed_returns_the_result_without_rerun(
    marked: Runner[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A lost COMMIT that the marker shows as committed returns the result, written once."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    backend = backend_of(marked)
    with inject(Fault.lost_commit(committed=True)):
        task = marked.run(create_task, "paid")
    assert task.name == "paid"
    assert backend.attempts == 1
    assert committed_names(marked) == ["paid"]
    (record,) = resolution_records(caplog)
    assert record.uow_commit_outcome == "committed"  # type: ignore[attr-defined]
    assert record.uow_commit_source == "commit marker"  # type: ignore[attr-defined]


def test_marker_says_absent_reruns(marked: Runner[Any]) -> None:
    """A lost COMMIT that the marker shows as not applied is rerun: the data ends up once."""
    backend = backend_of(marked)
    with inject(Fault.lost_commit(committed=False)):
        task = marked.run(create_task, "paid")
    assert task.name == "paid"
    assert backend.attempts == 2
    assert backend.commits == 1
    assert committed_names(marked) == ["paid"]


def test_marker_wins_over_verification(marked: Runner[Any]) -> None:
    """With commit markers on, the verification is not even asked."""
    asked: list[bool] = []

    def verify(_uow: Any) -> bool:
        asked.append(True)
        return False

    with inject(Fault.lost_commit(committed=True)):
        marked.using(verify=verify).run(create_task, "x")
    assert asked == []


def test_marker_verdict_is_used_even_when_idempotent(marked: Runner[Any]) -> None:
    """A marker verdict is used even for idempotent operations (no needless duplicate)."""
    backend = backend_of(marked)
    with inject(Fault.lost_commit(committed=True)):
        marked.using(idempotent=True).run(create_task, "x")
    assert backend.attempts == 1
    assert committed_names(marked) == ["x"]


# --- verification ------------------------------------------------------------------------------


def test_verification_says_committed_returns_the_result(units: Runner[Any]) -> None:
    """verify() finding the writes resolves a lost COMMIT as committed: no rerun, no error."""
    seen: list[Any] = []

    def paid_exists(uow: Any) -> bool:
        seen.append(uow)
        assert uow.active
        return any(t.name == "paid" for t in uow.tasks.all())

    with inject(Fault.lost_commit(committed=True)):
        task = units.using(verify=paid_exists).run(create_task, "paid")
    assert task.name == "paid"
    assert len(seen) == 1
    assert committed_names(units) == ["paid"]


def test_verification_says_absent_reruns(units: Runner[Any]) -> None:
    """verify() not finding the writes reruns the operation, which then commits once."""
    calls = 0

    def op(uow: Any) -> Task:
        nonlocal calls
        calls += 1
        return create_task(uow, "paid")

    with inject(Fault.lost_commit(committed=False)):
        units.using(verify=lambda uow: bool(uow.tasks.all())).run(op)
    assert calls == 2
    assert committed_names(units) == ["paid"]


def test_failing_verification_leaves_the_outcome_unknown(
    units: Runner[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A verification that raises cannot tell: CommitOutcomeUnknown, and the log says why."""
    caplog.set_level(logging.WARNING, logger=LOGGER)

    def broken(_uow: Any) -> bool:
        raise LookupError("verification bug")

    with pytest.raises(CommitOutcomeUnknown), inject(Fault.lost_commit(committed=True)):
        units.using(verify=broken).run(create_task, "paid")
    (record,) = resolution_records(caplog)
    assert "outcome unknown" in record.getMessage()
    assert "LookupError" in record.getMessage()


def test_known_error_at_commit_skips_resolution(
    units: Runner[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A deadlock at COMMIT is the server's answer: no resolution is attempted, it reruns."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with inject(Fault.deadlock(at="commit")):
        units.using(verify=lambda _uow: pytest.fail("not asked")).run(create_task, "x")
    assert resolution_records(caplog) == []
    assert backend_of(units).attempts == 2


def test_interrupted_commit_resolved_absent_is_raised_as_is(units: Runner[Any]) -> None:
    """An interrupted COMMIT shown not applied is the original (not retried) error, not unknown."""
    calls: list[str] = []

    def op(uow: Any) -> None:
        calls.append("op")
        create_task(uow, "x")

    with pytest.raises(SimulatedError), inject(Fault(ErrorKind.INTERRUPTED, 1317, "commit")):
        units.using(verify=lambda _uow: False).run(op)
    assert calls == ["op"]


def test_make_runner_helper_has_no_markers() -> None:
    """Sanity: the default test runner does not resolve lost COMMITs by markers."""
    assert backend_of(make_runner()).commit_markers is False
