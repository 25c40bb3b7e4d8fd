"""decide(): the pure retry decision shared by every runner."""

from __future__ import annotations

import pytest

from uow import ErrorKind, KindPolicy, RetryPolicy
from uow._decision import decide

RETRIED = [
    ErrorKind.DISCONNECT,
    ErrorKind.UNAVAILABLE,
    ErrorKind.DEADLOCK,
    ErrorKind.LOCK_WAIT,
    ErrorKind.FAILOVER,
]
NOT_RETRIED = [ErrorKind.INTERRUPTED, ErrorKind.PERMANENT]


@pytest.mark.parametrize("kind", RETRIED)
def test_transient_kind_is_retried_with_the_policy_backoff(kind: ErrorKind) -> None:
    """A transient kind early in the budget is retried, waiting exactly the policy's backoff."""
    policy = RetryPolicy()
    decision = decide(policy, kind, attempt=1, elapsed=0.0, jitter=0.3)
    assert decision.retry is True
    assert decision.reason == ""
    assert decision.wait == policy.backoff(kind, 1, 0.3)
    assert decision.max_attempts == policy.attempts


@pytest.mark.parametrize("kind", NOT_RETRIED)
def test_interrupted_and_permanent_are_not_retried(kind: ErrorKind) -> None:
    """Interrupted and permanent failures stop at once with reason 'not retryable'."""
    decision = decide(RetryPolicy(), kind, attempt=1, elapsed=0.0, jitter=0.0)
    assert decision.retry is False
    assert decision.wait == 0.0
    assert decision.reason == "not retryable"


def test_interrupted_is_retried_when_the_policy_says_so() -> None:
    """interrupted.retry=True makes interrupted statements rerun."""
    policy = RetryPolicy(interrupted=KindPolicy(retry=True))
    assert decide(policy, ErrorKind.INTERRUPTED, attempt=1, elapsed=0.0, jitter=0.0).retry


def test_kind_switched_off_is_not_retried() -> None:
    """A transient kind with retry=False is not retried, on any attempt."""
    policy = RetryPolicy(deadlock=KindPolicy(retry=False))
    for attempt in range(1, policy.attempts + 1):
        decision = decide(policy, ErrorKind.DEADLOCK, attempt=attempt, elapsed=0.0, jitter=0.0)
        assert decision.retry is False
        assert decision.reason == "not retryable"


@pytest.mark.parametrize("kind", RETRIED)
def test_attempts_are_exhausted_at_max(kind: ErrorKind) -> None:
    """Attempts 1..max-1 are retried; attempt max stops with 'attempts exhausted'."""
    policy = RetryPolicy(attempts=4, wait_initial=0, wait_jitter=0)
    retried = [decide(policy, kind, attempt=n, elapsed=0.0, jitter=0.0).retry for n in range(1, 5)]
    assert retried == [True, True, True, False]
    last = decide(policy, kind, attempt=4, elapsed=0.0, jitter=0.0)
    assert last.reason == "attempts exhausted"
    assert last.max_attempts == 4
    assert last.wait == 0.0


def test_a_single_attempt_policy_never_retries() -> None:
    """attempts=1 means the first failure is final."""
    decision = decide(
        RetryPolicy(attempts=1), ErrorKind.DISCONNECT, attempt=1, elapsed=0.0, jitter=0.0
    )
    assert (decision.retry, decision.reason) == (False, "attempts exhausted")


def test_per_kind_attempts_cap_applies_to_that_kind_only() -> None:
    """deadlock.attempts=2 stops deadlocks after 2 attempts while other kinds go on."""
    policy = RetryPolicy(attempts=5, deadlock=KindPolicy(attempts=2))
    deadlock = decide(policy, ErrorKind.DEADLOCK, attempt=2, elapsed=0.0, jitter=0.0)
    assert deadlock.retry is False
    assert deadlock.reason == "attempts exhausted"
    assert deadlock.max_attempts == 2
    other = decide(policy, ErrorKind.LOCK_WAIT, attempt=2, elapsed=0.0, jitter=0.0)
    assert other.retry is True
    assert other.max_attempts == 5


def test_per_kind_attempts_cannot_exceed_the_policy() -> None:
    """A kind's cap above the policy's attempts does not extend the policy."""
    policy = RetryPolicy(attempts=3, deadlock=KindPolicy(attempts=50))
    decision = decide(policy, ErrorKind.DEADLOCK, attempt=3, elapsed=0.0, jitter=0.0)
    assert decision.retry is False
    assert decision.max_attempts == 3


def test_time_budget_exhausted_when_the_wait_would_reach_the_timeout() -> None:
    """elapsed + wait >= timeout stops with 'time budget exhausted'; just below retries."""
    policy = RetryPolicy(timeout=10, wait_initial=1, wait_max=1, wait_jitter=0)
    kind = ErrorKind.UNAVAILABLE
    assert decide(policy, kind, attempt=1, elapsed=8.999, jitter=0.0).retry is True
    for elapsed in (9.0, 9.5, 10.0, 50.0):
        decision = decide(policy, kind, attempt=1, elapsed=elapsed, jitter=0.0)
        assert decision.retry is False, elapsed
        assert decision.reason == "time budget exhausted"
        assert decision.wait == 0.0


def test_time_budget_counts_the_jitter() -> None:
    """The jittered wait, not the bare step, is compared with the remaining budget."""
    policy = RetryPolicy(timeout=10, wait_initial=1, wait_max=5, wait_jitter=2)
    kind = ErrorKind.UNAVAILABLE
    assert decide(policy, kind, attempt=1, elapsed=8.5, jitter=0.0).retry is True
    assert decide(policy, kind, attempt=1, elapsed=8.5, jitter=0.5).retry is False


def test_every_scheduled_retry_ends_inside_the_budget() -> None:
    """For any elapsed time and jitter, a retried decision's wait ends before the timeout."""
    policy = RetryPolicy(timeout=3, wait_initial=0.2, wait_max=2, wait_jitter=0.5)
    for kind in RETRIED:
        for attempt in range(1, policy.attempts):
            for tenth in range(40):
                for jitter in (0.0, 0.5, 0.99):
                    elapsed = tenth / 10
                    decision = decide(policy, kind, attempt=attempt, elapsed=elapsed, jitter=jitter)
                    if decision.retry:
                        assert elapsed + decision.wait < policy.timeout
                    else:
                        assert decision.reason == "time budget exhausted"


def test_attempts_cap_lowers_max_attempts() -> None:
    """The testing switch's cap stops earlier than the policy and is reported as max."""
    policy = RetryPolicy(attempts=5)
    capped = decide(policy, ErrorKind.DISCONNECT, attempt=2, elapsed=0, jitter=0, attempts_cap=2)
    assert capped.retry is False
    assert capped.reason == "attempts exhausted"
    assert capped.max_attempts == 2
    first = decide(policy, ErrorKind.DISCONNECT, attempt=1, elapsed=0, jitter=0, attempts_cap=2)
    assert first.retry is True


def test_attempts_cap_never_raises_the_policy() -> None:
    """A cap above the policy's attempts leaves the policy's limit in force."""
    policy = RetryPolicy(attempts=2)
    decision = decide(policy, ErrorKind.DISCONNECT, attempt=2, elapsed=0, jitter=0, attempts_cap=10)
    assert decision.retry is False
    assert decision.max_attempts == 2


def test_not_retryable_wins_over_exhaustion() -> None:
    """A permanent error at the last attempt reports 'not retryable', not 'attempts exhausted'."""
    policy = RetryPolicy(attempts=2)
    decision = decide(policy, ErrorKind.PERMANENT, attempt=2, elapsed=100.0, jitter=0.0)
    assert decision.reason == "not retryable"


def test_decision_is_frozen() -> None:
    """A Decision cannot be changed after the fact."""
    decision = decide(RetryPolicy(), ErrorKind.DEADLOCK, attempt=1, elapsed=0.0, jitter=0.0)
    with pytest.raises(AttributeError):
        decision.retry = False  # type: ignore[misc]
