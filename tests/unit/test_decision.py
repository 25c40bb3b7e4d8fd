"""decide(): the pure retry decision shared by every runner, and the Reason it gives."""

from __future__ import annotations

import itertools

import pytest

from tests.unit.conftest import FakeClock
from uow import ErrorKind, KindPolicy, Reason, RetryPolicy
from uow._decision import Decision, decide

RETRIED = [
    ErrorKind.DISCONNECT,
    ErrorKind.UNAVAILABLE,
    ErrorKind.DEADLOCK,
    ErrorKind.LOCK_WAIT,
    ErrorKind.FAILOVER,
]
NOT_RETRIED = [ErrorKind.INTERRUPTED, ErrorKind.PERMANENT]
ALMOST_ONE = 0.999_999


def schedule(
    policy: RetryPolicy, kind: ErrorKind, jitter: float, limit: int = 1000
) -> tuple[list[float], Decision]:
    """Fail every attempt instantly, sleeping each wait on a fake clock; return waits and the end.

    Stops after ``limit`` attempts: waits of zero never spend the time budget.
    """
    clock = FakeClock()
    started = clock()
    waits: list[float] = []
    attempt = 1
    while attempt <= limit:
        decision = decide(policy, kind, attempt=attempt, elapsed=clock() - started, jitter=jitter)
        if not decision.retry:
            return waits, decision
        waits.append(decision.wait)
        clock.sleep(decision.wait)
        attempt += 1
    return waits, decision


@pytest.mark.parametrize("kind", RETRIED)
def test_transient_kind_is_retried_with_the_policy_backoff(kind: ErrorKind) -> None:
    """A transient kind early in the budget is retried, waiting exactly the policy's backoff."""
    policy = RetryPolicy()
    decision = decide(policy, kind, attempt=1, elapsed=0.0, jitter=0.3)
    assert decision.retry is True
    assert decision.reason is Reason.WILL_RETRY
    assert decision.wait == policy.backoff(kind, 1, 0.3)
    assert decision.max_attempts == policy.max_attempts(kind)


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
    for attempt in range(1, 6):
        decision = decide(policy, ErrorKind.DEADLOCK, attempt=attempt, elapsed=0.0, jitter=0.0)
        assert decision.retry is False
        assert decision.reason == "not retryable"


@pytest.mark.parametrize("kind", RETRIED)
def test_attempts_are_exhausted_at_max(kind: ErrorKind) -> None:
    """Attempts 1..max-1 are retried; attempt max stops with 'attempts exhausted'."""
    policy = RetryPolicy(attempts=4, wait_initial=0)
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
    policy = RetryPolicy(timeout=10, wait_initial=2, wait_max=2)  # jitter 0.5: a 1 s wait
    kind = ErrorKind.UNAVAILABLE
    assert decide(policy, kind, attempt=1, elapsed=8.999, jitter=0.5).retry is True
    for elapsed in (9.0, 9.5, 10.0, 50.0):
        decision = decide(policy, kind, attempt=1, elapsed=elapsed, jitter=0.5)
        assert decision.retry is False, elapsed
        assert decision.reason == "time budget exhausted"
        assert decision.wait == 0.0
        assert decision.max_attempts is None


def test_time_budget_counts_the_jittered_wait() -> None:
    """The jittered wait, not the bare step, is compared with the remaining budget."""
    policy = RetryPolicy(timeout=10, wait_initial=1, wait_max=5)  # a 1 s step
    kind = ErrorKind.UNAVAILABLE
    assert decide(policy, kind, attempt=1, elapsed=9.5, jitter=0.4).retry is True
    assert decide(policy, kind, attempt=1, elapsed=9.5, jitter=0.5).retry is False


def test_every_scheduled_retry_ends_inside_the_budget() -> None:
    """For any elapsed time and jitter, a retried decision's wait ends before the timeout."""
    policy = RetryPolicy(timeout=3, wait_initial=0.2, wait_max=2)
    for kind in RETRIED:
        for attempt in range(1, 10):
            for tenth in range(40):
                for jitter in (0.0, 0.5, 0.99):
                    elapsed = tenth / 10
                    decision = decide(policy, kind, attempt=attempt, elapsed=elapsed, jitter=jitter)
                    if decision.retry:
                        assert elapsed + decision.wait < policy.timeout
                    else:
                        assert decision.reason in {"time budget exhausted", "attempts exhausted"}


def test_attempts_cap_lowers_max_attempts() -> None:
    """The testing switch's cap stops earlier than the policy and is reported as max."""
    policy = RetryPolicy(attempts=5)
    capped = decide(policy, ErrorKind.DISCONNECT, attempt=2, elapsed=0, jitter=0, attempts_cap=2)
    assert capped.retry is False
    assert capped.reason == "attempts exhausted"
    assert capped.max_attempts == 2
    first = decide(policy, ErrorKind.DISCONNECT, attempt=1, elapsed=0, jitter=0, attempts_cap=2)
    assert first.retry is True


def test_attempts_cap_bounds_a_kind_without_a_count() -> None:
    """The testing switch's cap also bounds a kind bounded by time only."""
    decision = decide(
        RetryPolicy(), ErrorKind.DISCONNECT, attempt=3, elapsed=0, jitter=0, attempts_cap=3
    )
    assert (decision.retry, decision.max_attempts) == (False, 3)


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


# --- the default schedule ----------------------------------------------------------------------


def test_default_deadlock_schedule_is_five_attempts_at_the_capped_steps() -> None:
    """With the largest jitter, deadlock waits are the steps 0.01, 0.02, 0.04, 0.08; 5 attempts."""
    waits, end = schedule(RetryPolicy(), ErrorKind.DEADLOCK, ALMOST_ONE)
    assert waits == pytest.approx([0.01, 0.02, 0.04, 0.08], rel=1e-5)
    assert (end.reason, end.max_attempts) == (Reason.ATTEMPTS_EXHAUSTED, 5)


def test_default_lock_wait_schedule_is_five_attempts() -> None:
    """Lock waits also stop after five attempts, with the policy-wide steps from 0.1 s."""
    waits, end = schedule(RetryPolicy(), ErrorKind.LOCK_WAIT, ALMOST_ONE)
    assert waits == pytest.approx([0.1, 0.2, 0.4, 0.8], rel=1e-5)
    assert end.reason is Reason.ATTEMPTS_EXHAUSTED


@pytest.mark.parametrize(
    ("kind", "first_step"),
    [(ErrorKind.DISCONNECT, 0.02), (ErrorKind.UNAVAILABLE, 0.1), (ErrorKind.FAILOVER, 0.5)],
)
def test_default_restart_kinds_are_retried_until_the_budget(
    kind: ErrorKind, first_step: float
) -> None:
    """Disconnects, outages and failovers go past five attempts, steps capped at 5 s, until 30 s."""
    waits, end = schedule(RetryPolicy(), kind, ALMOST_ONE)
    assert len(waits) + 1 > 5
    assert waits[0] == pytest.approx(first_step, rel=1e-5)
    assert waits[-1] == pytest.approx(5.0, rel=1e-5)
    assert all(later >= earlier for earlier, later in itertools.pairwise(waits))
    assert (end.reason, end.max_attempts) == (Reason.TIME_BUDGET_EXHAUSTED, None)
    assert sum(waits) < 30.0 <= sum(waits) + 5.0


def test_default_disconnect_schedule_in_full() -> None:
    """The default lost-connection schedule: doubling from 20 ms to 5 s, thirteen attempts."""
    waits, end = schedule(RetryPolicy(), ErrorKind.DISCONNECT, ALMOST_ONE)
    expected = [0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.0, 5.0, 5.0, 5.0]
    assert waits == pytest.approx(expected, rel=1e-5)
    assert end.reason is Reason.TIME_BUDGET_EXHAUSTED


@pytest.mark.parametrize("kind", RETRIED)
def test_full_jitter_spans_zero_to_the_step(kind: ErrorKind) -> None:
    """Jitter 0 waits nothing; every other draw waits that fraction of the step."""
    policy = RetryPolicy()
    waits, _ = schedule(policy, kind, 0.0, limit=4)
    assert waits == [0.0] * len(waits)
    for retry in range(1, 12):
        step = policy.backoff(kind, retry, ALMOST_ONE) / ALMOST_ONE
        assert policy.backoff(kind, retry, 0.25) == pytest.approx(step / 4)


# --- Reason ------------------------------------------------------------------------------------


def test_reason_compares_and_hashes_as_its_string() -> None:
    """A Reason member is its string: == and set membership both work with plain strings."""
    reason = Reason.ATTEMPTS_EXHAUSTED
    assert reason == "attempts exhausted"
    assert reason in {"attempts exhausted"}  # noqa: FURB171 -- set membership hashes it
    by_reason: dict[str, int] = {reason: 1}
    assert by_reason["attempts exhausted"] == 1
    assert isinstance(reason, str)
    assert str(reason) == f"{reason}" == "attempts exhausted"
    assert Reason("time budget exhausted") is Reason.TIME_BUDGET_EXHAUSTED


def test_will_retry_is_the_empty_string() -> None:
    """WILL_RETRY is "", so a record's reason is falsy exactly when the operation is retried."""
    assert Reason.WILL_RETRY == ""  # type: ignore[comparison-overlap]  # a StrEnum equals its value
    assert not Reason.WILL_RETRY
    assert all(member for member in Reason if member is not Reason.WILL_RETRY)
