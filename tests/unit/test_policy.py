"""RetryPolicy: bounded defaults, validation naming the field, full-jitter backoff."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from uow import ErrorKind, KindPolicy, RetryPolicy

JITTERS = (0.0, 0.25, 0.5, 0.999_999)


def error_text(excinfo: pytest.ExceptionInfo[ValidationError]) -> str:
    return str(excinfo.value)


def test_defaults_are_bounded() -> None:
    """The default policy has a finite time budget; deadlocks and lock waits a count too."""
    policy = RetryPolicy()
    assert policy.attempts is None
    assert 0 < policy.timeout <= 60
    assert math.isfinite(policy.timeout)
    assert policy.wait_initial <= policy.wait_max
    assert policy.max_attempts(ErrorKind.DEADLOCK) == 5
    assert policy.max_attempts(ErrorKind.LOCK_WAIT) == 5
    for kind in (ErrorKind.DISCONNECT, ErrorKind.UNAVAILABLE, ErrorKind.FAILOVER):
        assert policy.max_attempts(kind) is None, kind


def test_defaults_do_not_retry_interrupted_or_permanent() -> None:
    """Interrupted statements and permanent errors are not retried by default."""
    policy = RetryPolicy()
    assert policy.for_kind(ErrorKind.INTERRUPTED).retry is False
    assert policy.for_kind(ErrorKind.PERMANENT).retry is False
    retried = {kind for kind in ErrorKind if policy.for_kind(kind).retry}
    assert retried == {
        ErrorKind.DISCONNECT,
        ErrorKind.UNAVAILABLE,
        ErrorKind.DEADLOCK,
        ErrorKind.LOCK_WAIT,
        ErrorKind.FAILOVER,
    }


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"attempts": 0}, "attempts"),
        ({"attempts": 1001}, "attempts"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": 0}, "timeout"),
        ({"wait_initial": -0.1}, "wait_initial"),
        ({"wait_max": 301}, "wait_max"),
        ({"wait_exp_base": 0.5}, "wait_exp_base"),
        ({"wait_jitter": 0.1}, "wait_jitter"),  # removed: the jitter is full, not a setting
        ({"deadlock": {"attempts": 0}}, "deadlock.attempts"),
        ({"disconnect": {"wait_max": -1}}, "disconnect.wait_max"),
    ],
)
def test_invalid_value_is_rejected_naming_the_field(
    settings: dict[str, object], field: str
) -> None:
    """An out-of-range value fails at construction with the field's name in the message."""
    with pytest.raises(ValidationError) as excinfo:
        RetryPolicy.model_validate(settings)
    assert field in error_text(excinfo)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"attempts": True}, "attempts"),
        ({"attempts": False}, "attempts"),
        ({"timeout": True}, "timeout"),
        ({"wait_max": False}, "wait_max"),
        ({"deadlock": {"attempts": True}}, "deadlock.attempts"),
        ({"lock_wait": {"wait_initial": True}}, "lock_wait.wait_initial"),
    ],
)
def test_booleans_are_refused_where_numbers_are_meant(
    settings: dict[str, object], field: str
) -> None:
    """attempts=True is not 1 attempt: a boolean for a number is a ValidationError naming it."""
    with pytest.raises(ValidationError) as excinfo:
        RetryPolicy.model_validate(settings)
    assert field in error_text(excinfo)
    assert "not the boolean" in error_text(excinfo)


def test_booleans_are_refused_by_the_constructor_and_override() -> None:
    """The keyword forms refuse booleans too, and so does KindPolicy on its own."""
    with pytest.raises(ValidationError, match="attempts"):
        RetryPolicy(attempts=True)
    with pytest.raises(ValidationError, match="timeout"):
        RetryPolicy().override(timeout=True)
    with pytest.raises(ValidationError, match="attempts"):
        KindPolicy(attempts=True)


def test_wait_initial_above_wait_max_is_rejected() -> None:
    """wait_initial larger than wait_max fails and the message names both fields."""
    with pytest.raises(ValidationError) as excinfo:
        RetryPolicy(wait_initial=2, wait_max=1)
    assert "wait_initial" in error_text(excinfo)
    assert "wait_max" in error_text(excinfo)


def test_wait_initial_equal_to_wait_max_is_accepted() -> None:
    """The bound is inclusive: a constant step is a valid policy."""
    policy = RetryPolicy(wait_initial=1, wait_max=1)
    assert policy.backoff(ErrorKind.UNAVAILABLE, 3, 0.5) == 0.5


def test_retrying_permanent_errors_is_rejected() -> None:
    """permanent.retry=True is refused and the message names permanent.retry."""
    with pytest.raises(ValidationError) as excinfo:
        RetryPolicy.model_validate({"permanent": {"retry": True}})
    assert "permanent.retry" in error_text(excinfo)


def test_unknown_field_is_rejected() -> None:
    """A misspelt setting is an error naming it, not silently ignored."""
    with pytest.raises(ValidationError) as excinfo:
        RetryPolicy.model_validate({"atempts": 3})
    assert "atempts" in error_text(excinfo)


def test_unknown_kind_field_is_rejected() -> None:
    """A misspelt per-kind setting is an error naming the kind and the field."""
    with pytest.raises(ValidationError) as excinfo:
        RetryPolicy.model_validate({"deadlock": {"retires": 3}})
    assert "deadlock.retires" in error_text(excinfo)


def test_policy_is_frozen() -> None:
    """Assigning to a policy raises: one policy can be shared safely."""
    policy = RetryPolicy()
    with pytest.raises(ValidationError):
        policy.attempts = 10  # type: ignore[misc]
    with pytest.raises(ValidationError):
        policy.deadlock.attempts = 10  # type: ignore[misc]
    assert policy.attempts is None
    assert policy.deadlock.attempts == 5


def test_override_returns_a_changed_copy() -> None:
    """override() changes the given settings on a copy and keeps the rest."""
    base = RetryPolicy(attempts=7, timeout=12)
    changed = base.override(attempts=3)
    assert changed.attempts == 3
    assert changed.timeout == 12
    assert base.attempts == 7
    assert changed.override(attempts=None).attempts is None


def test_override_validates() -> None:
    """override() rejects invalid values like the constructor, naming the field."""
    with pytest.raises(ValidationError) as excinfo:
        RetryPolicy().override(timeout=0)
    assert "timeout" in error_text(excinfo)
    with pytest.raises(ValidationError) as excinfo:
        RetryPolicy().override(wait_initial=10)
    assert "wait_initial" in error_text(excinfo)
    with pytest.raises(ValidationError) as excinfo:
        RetryPolicy().override(bogus=1)
    assert "bogus" in error_text(excinfo)


def test_override_accepts_a_whole_kind_policy() -> None:
    """override() with a KindPolicy replaces only what it sets of that kind."""
    policy = RetryPolicy().override(lock_wait=KindPolicy(retry=False))
    assert policy.lock_wait.retry is False
    assert policy.max_attempts(ErrorKind.LOCK_WAIT) == 5


def test_partial_kind_override_keeps_the_kinds_other_defaults() -> None:
    """Setting one field of a kind keeps that kind's other defaults (retry, wait)."""
    policy = RetryPolicy().override(interrupted={"attempts": 2}, deadlock={"attempts": 9})
    assert policy.interrupted.retry is False
    assert policy.deadlock.wait_initial == 0.01
    assert policy.deadlock.attempts == 9
    assert RetryPolicy(interrupted={"attempts": 2}).interrupted.retry is False


def test_max_attempts_takes_the_lower_of_policy_and_kind() -> None:
    """A per-kind cap lowers the attempts for that kind but never raises them."""
    policy = RetryPolicy(
        attempts=4, deadlock=KindPolicy(attempts=10), failover=KindPolicy(attempts=2)
    )
    assert policy.max_attempts(ErrorKind.DEADLOCK) == 4
    assert policy.max_attempts(ErrorKind.FAILOVER) == 2
    assert policy.max_attempts(ErrorKind.UNAVAILABLE) == 4


@pytest.mark.parametrize("kind", list(ErrorKind))
@pytest.mark.parametrize(
    "policy",
    [
        RetryPolicy(),
        RetryPolicy(attempts=100, wait_initial=60, wait_max=300, wait_exp_base=10),
        RetryPolicy(wait_initial=0, wait_max=0),
        RetryPolicy(wait_max=0.2),
        RetryPolicy(deadlock=KindPolicy(wait_max=300), disconnect=KindPolicy(wait_initial=0)),
    ],
    ids=["default", "largest", "zero", "small-cap", "kind-caps"],
)
def test_backoff_is_bounded_for_every_retry_and_jitter(
    kind: ErrorKind, policy: RetryPolicy
) -> None:
    """0 <= backoff < the kind's wait_max (or 0) for every retry number and jitter in [0, 1)."""
    ceiling = policy.for_kind(kind).wait_max
    ceiling = policy.wait_max if ceiling is None else ceiling
    for retry_number in range(1, 200):
        for jitter in JITTERS:
            wait = policy.backoff(kind, retry_number, jitter)
            assert 0 <= wait <= ceiling * jitter, (retry_number, jitter, wait)


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_backoff_with_a_fixed_jitter_never_decreases(kind: ErrorKind) -> None:
    """With the same jitter drawn, the wait grows (or stays at the cap) with each retry."""
    policy = RetryPolicy(attempts=100, wait_initial=0.05, wait_max=30, wait_exp_base=1.7)
    waits = [policy.backoff(kind, n, 0.5) for n in range(1, 100)]
    assert waits == sorted(waits)


def test_backoff_follows_the_documented_formula() -> None:
    """backoff = jitter * min(wait_max, wait_initial * base ** (n - 1)) ("full jitter")."""
    policy = RetryPolicy(wait_initial=0.1, wait_max=1.0, wait_exp_base=2)
    kind = ErrorKind.UNAVAILABLE  # no per-kind waits by default
    assert policy.backoff(kind, 1, 0.0) == 0.0
    assert policy.backoff(kind, 1, 0.5) == pytest.approx(0.05)
    assert policy.backoff(kind, 3, 0.5) == pytest.approx(0.2)
    assert policy.backoff(kind, 10, 0.5) == pytest.approx(0.5)
    assert policy.backoff(kind, 10_000, 0.999_999) == pytest.approx(1.0, rel=1e-5)


def test_per_kind_waits_are_used() -> None:
    """A kind's wait_initial and wait_max replace the policy-wide ones for that kind only."""
    policy = RetryPolicy(
        wait_initial=0.1,
        wait_max=5,
        deadlock=KindPolicy(wait_initial=0.01, wait_max=0.02),
        failover=KindPolicy(wait_initial=2),
    )
    assert policy.backoff(ErrorKind.DEADLOCK, 1, 0.5) == pytest.approx(0.005)
    assert policy.backoff(ErrorKind.DEADLOCK, 5, 0.5) == pytest.approx(0.01)
    assert policy.backoff(ErrorKind.FAILOVER, 1, 0.5) == pytest.approx(1)
    assert policy.backoff(ErrorKind.FAILOVER, 3, 0.5) == pytest.approx(2.5)
    assert policy.backoff(ErrorKind.UNAVAILABLE, 1, 0.5) == pytest.approx(0.05)


def test_default_disconnect_retry_starts_short_and_backs_off() -> None:
    """A lost connection is rerun almost at once, then with growing steps if it keeps failing."""
    policy = RetryPolicy()
    assert policy.backoff(ErrorKind.DISCONNECT, 1, 0.999_999) == pytest.approx(0.02, rel=1e-5)
    assert policy.backoff(ErrorKind.DISCONNECT, 4, 0.999_999) == pytest.approx(0.16, rel=1e-5)
    assert policy.backoff(ErrorKind.DISCONNECT, 4, 0.5) == pytest.approx(0.08)


def test_kind_policy_object_keeps_the_kinds_other_defaults() -> None:
    """deadlock=KindPolicy(attempts=3) changes the attempts only, like the dict form."""
    assert RetryPolicy(deadlock=KindPolicy(attempts=3)).deadlock == KindPolicy(
        attempts=3, wait_initial=0.01
    )


def test_kind_wait_initial_above_its_wait_max_is_rejected() -> None:
    """A kind's own wait_initial larger than its own wait_max is refused, naming the fields."""
    with pytest.raises(ValidationError) as excinfo:
        KindPolicy(wait_initial=2, wait_max=1)
    assert "wait_initial" in error_text(excinfo)
