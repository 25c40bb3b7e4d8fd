"""Settling a lost COMMIT, step by step: the commit marker, then the verification, then nothing."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from adapters.memory import InMemoryBackend
from tests.unit.conftest import LOGGER, FakeClock
from uow import AttemptInfo, RetryPolicy
from uow._commit import RESOLUTION_GRACE, CommitOutcome, _resolve, log_resolution
from uow._loop import RetryLoop
from uow._script import run_sync
from uow._settings import RunnerSettings


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


class Checker:
    """Stands in for the fresh runner a verification runs in; records its time budgets."""

    def __init__(self) -> None:
        self.timeouts: list[float] = []

    def __call__(self, timeout: float) -> Any:
        self.timeouts.append(timeout)
        return lambda verify: verify("a fresh unit of work")


def resolve(
    answer: bool | BaseException | None,
    verify: Any = None,
    *,
    clock: FakeClock | None = None,
    spent: float = 0.0,
) -> tuple[CommitOutcome, StubTransaction, Checker]:
    """Resolve a lost COMMIT of an operation with a 2.5 s budget, ``spent`` seconds in."""
    clock = clock or FakeClock()
    settings = RunnerSettings(policy=RetryPolicy(timeout=2.5), verify=verify, clock=clock)
    loop = RetryLoop(settings, InMemoryBackend(), "pay", None)
    clock.advance(spent)
    transaction, checker = StubTransaction(answer), Checker()
    outcome = run_sync(_resolve(loop, transaction, checker))
    return outcome, transaction, checker


@pytest.mark.parametrize("answer", [True, False])
def test_marker_answer_is_the_outcome(answer: bool) -> None:
    """A marker that can tell decides, with source 'commit marker'."""
    outcome, _, checker = resolve(answer, verify=lambda _uow: not answer)
    assert outcome == CommitOutcome(answer, "commit marker")
    assert checker.timeouts == []  # the verification was not asked


def test_marker_lookup_failure_is_unknown() -> None:
    """A marker lookup that fails leaves the outcome unknown and keeps the error."""
    error = ConnectionError("still down")
    outcome, _, checker = resolve(error, verify=lambda _uow: True)
    assert outcome.committed is None
    assert outcome.source == "commit marker"
    assert outcome.error is error
    assert checker.timeouts == []


def test_no_marker_and_no_verification_is_unknown() -> None:
    """Nothing to ask: the outcome is unknown, source 'none'."""
    assert resolve(None)[0] == CommitOutcome(None, "none")


def test_verification_result_is_made_boolean() -> None:
    """A truthy verification result means committed; it runs on a unit of work of its own."""
    seen: list[object] = []

    def verify(uow: object) -> list[str]:
        seen.append(uow)
        return ["row"]

    assert resolve(None, verify=verify)[0] == CommitOutcome(True, "verification")
    assert seen == ["a fresh unit of work"]


def test_failing_verification_is_unknown_and_keeps_the_error() -> None:
    """A verification that raises cannot tell: unknown, with its error for the log."""
    error = LookupError("bug")

    def verify(_uow: object) -> bool:
        raise error

    outcome = resolve(None, verify=verify)[0]
    assert (outcome.committed, outcome.source, outcome.error) == (None, "verification", error)


def test_lookup_and_verification_get_the_remaining_budget() -> None:
    """The marker lookup and the verification may take what is left of the time budget."""
    _, transaction, checker = resolve(None, verify=lambda _uow: False, spent=1.0)
    assert transaction.timeouts == pytest.approx([1.5])
    assert checker.timeouts == pytest.approx([1.5])


def test_a_spent_budget_still_leaves_the_resolution_its_grace() -> None:
    """Even past the budget, the lookup gets RESOLUTION_GRACE seconds rather than none."""
    _, transaction, _ = resolve(None, spent=10.0)
    assert transaction.timeouts == [RESOLUTION_GRACE]


def test_resolution_log_has_structured_fields(caplog: pytest.LogCaptureFixture) -> None:
    """The resolution WARNING names operation, attempt, verdict and source."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    log_resolution("pay", 3, CommitOutcome(False, "verification"))
    (record,) = [r for r in caplog.records if r.name == LOGGER]
    assert (
        record.getMessage() == "lost COMMIT of pay attempt 3: outcome absent (source: verification)"
    )
    assert record.uow_operation == "pay"  # type: ignore[attr-defined]
    assert record.uow_attempt == 3  # type: ignore[attr-defined]
    assert record.uow_commit_outcome == "absent"  # type: ignore[attr-defined]
    assert record.uow_commit_source == "verification"  # type: ignore[attr-defined]


def test_memory_transaction_without_markers_cannot_tell() -> None:
    """The in-memory adapter answers committed() only when markers are on."""
    plain = InMemoryBackend()
    with_markers = InMemoryBackend(commit_markers=True)
    info = AttemptInfo("op", 1, 0.0)
    assert plain.begin(info).committed(1.0) is None
    transaction = with_markers.begin(info)
    assert transaction.committed(1.0) is False
    transaction.prepare()
    transaction.commit()
    assert transaction.committed(1.0) is True
