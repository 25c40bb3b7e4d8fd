"""RetryPolicy: bounded defaults, validation naming the field, environment, backoff."""

from __future__ import annotations

import math
import os

import pytest
from pydantic import ValidationError

from uow import ErrorKind, KindPolicy, RetryPolicy

JITTERS = (0.0, 0.25, 0.5, 0.999_999)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No RETRYING_UOW_* variable of the developer's shell leaks into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("RETRYING_UOW_"):
            monkeypatch.delenv(name)


def error_text(excinfo: pytest.ExceptionInfo[ValidationError]) -> str:
    return str(excinfo.value)


def test_defaults_are_bounded() -> None:
    """The default policy has a finite attempt count and a finite total time budget."""
    policy = RetryPolicy()
    assert 1 < policy.attempts <= 10
    assert 0 < policy.timeout <= 60
    assert math.isfinite(policy.timeout)
    assert policy.wait_initial <= policy.wait_max


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
        ({"attempts": 101}, "attempts"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": 0}, "timeout"),
        ({"wait_initial": -0.1}, "wait_initial"),
        ({"wait_max": 301}, "wait_max"),
        ({"wait_exp_base": 0.5}, "wait_exp_base"),
        ({"wait_jitter": -1}, "wait_jitter"),
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


def test_wait_initial_above_wait_max_is_rejected() -> None:
    """wait_initial larger than wait_max fails and the message names both fields."""
    with pytest.raises(ValidationError) as excinfo:
        RetryPolicy(wait_initial=2, wait_max=1)
    assert "wait_initial" in error_text(excinfo)
    assert "wait_max" in error_text(excinfo)


def test_wait_initial_equal_to_wait_max_is_accepted() -> None:
    """The bound is inclusive: a constant backoff is a valid policy."""
    policy = RetryPolicy(wait_initial=1, wait_max=1)
    assert policy.backoff(ErrorKind.UNAVAILABLE, 3, 0.0) == 1


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
    assert policy.attempts == 5


def test_override_returns_a_changed_copy() -> None:
    """override() changes the given settings on a copy and keeps the rest."""
    base = RetryPolicy(attempts=7, timeout=12)
    changed = base.override(attempts=3)
    assert changed.attempts == 3
    assert changed.timeout == 12
    assert base.attempts == 7


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
    """override() with a KindPolicy replaces that kind's settings."""
    policy = RetryPolicy().override(lock_wait=KindPolicy(retry=False))
    assert policy.lock_wait.retry is False
    assert policy.max_attempts(ErrorKind.LOCK_WAIT) == 5


def test_partial_kind_override_keeps_the_kinds_other_defaults() -> None:
    """Setting one field of a kind keeps that kind's other defaults (retry, wait)."""
    policy = RetryPolicy().override(interrupted={"attempts": 2}, deadlock={"attempts": 9})
    assert policy.interrupted.retry is False
    assert policy.deadlock.wait_initial == 0.01
    assert RetryPolicy(interrupted={"attempts": 2}).interrupted.retry is False  # type: ignore[arg-type]


def test_from_env_reads_prefixed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """RETRYING_UOW_ATTEMPTS and RETRYING_UOW_DEADLOCK__ATTEMPTS set the policy."""
    monkeypatch.setenv("RETRYING_UOW_ATTEMPTS", "3")
    monkeypatch.setenv("RETRYING_UOW_TIMEOUT", "7.5")
    monkeypatch.setenv("RETRYING_UOW_DEADLOCK__ATTEMPTS", "2")
    policy = RetryPolicy.from_env()
    assert type(policy) is RetryPolicy
    assert policy.attempts == 3
    assert policy.timeout == 7.5
    assert policy.deadlock.attempts == 2
    assert policy.max_attempts(ErrorKind.DEADLOCK) == 2
    assert policy.wait_max == RetryPolicy().wait_max


def test_from_env_without_variables_gives_defaults() -> None:
    """With nothing set, from_env() equals the default policy."""
    assert RetryPolicy.from_env() == RetryPolicy()


def test_from_env_with_another_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    """A custom prefix reads only its own variables."""
    monkeypatch.setenv("MYAPP_ATTEMPTS", "2")
    monkeypatch.setenv("RETRYING_UOW_ATTEMPTS", "9")
    assert RetryPolicy.from_env(prefix="MYAPP_").attempts == 2


def test_from_env_result_is_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    """A policy read from the environment is as frozen as a constructed one."""
    monkeypatch.setenv("RETRYING_UOW_ATTEMPTS", "3")
    policy = RetryPolicy.from_env()
    with pytest.raises(ValidationError):
        policy.attempts = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("RETRYING_UOW_ATTEMPTS", "zero", "attempts"),
        ("RETRYING_UOW_ATTEMPTS", "0", "attempts"),
        ("RETRYING_UOW_TIMEOUT", "-1", "timeout"),
        ("RETRYING_UOW_DEADLOCK__ATTEMPTS", "0", "attempts"),
    ],
)
def test_from_env_invalid_value_names_the_field(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str
) -> None:
    """An invalid environment value fails with the field's name in the message."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as excinfo:
        RetryPolicy.from_env()
    assert field in error_text(excinfo)


def test_from_env_partial_kind_setting_keeps_the_kinds_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One per-kind variable changes only that field of the kind."""
    monkeypatch.setenv("RETRYING_UOW_INTERRUPTED__ATTEMPTS", "2")
    monkeypatch.setenv("RETRYING_UOW_PERMANENT__ATTEMPTS", "1")
    policy = RetryPolicy.from_env()
    assert policy.interrupted.retry is False
    assert policy.interrupted.attempts == 2


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
        RetryPolicy(attempts=100, wait_initial=60, wait_max=300, wait_exp_base=10, wait_jitter=60),
        RetryPolicy(wait_initial=0, wait_max=0, wait_jitter=0),
        RetryPolicy(wait_max=0.2, wait_jitter=5),
        RetryPolicy(deadlock=KindPolicy(wait_max=300), disconnect=KindPolicy(wait_initial=0)),
    ],
    ids=["default", "largest", "zero", "small-cap", "kind-caps"],
)
def test_backoff_is_bounded_for_every_retry_and_jitter(
    kind: ErrorKind, policy: RetryPolicy
) -> None:
    """0 <= backoff <= the kind's wait_max for every retry number and jitter in [0, 1)."""
    ceiling = policy.for_kind(kind).wait_max
    ceiling = policy.wait_max if ceiling is None else ceiling
    for retry_number in range(1, policy.attempts + 1):
        for jitter in JITTERS:
            wait = policy.backoff(kind, retry_number, jitter)
            assert 0 <= wait <= ceiling, (retry_number, jitter, wait)


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_backoff_without_jitter_never_decreases(kind: ErrorKind) -> None:
    """Without jitter the wait grows (or stays at the cap) with each retry."""
    policy = RetryPolicy(attempts=100, wait_initial=0.05, wait_max=30, wait_exp_base=1.7)
    waits = [policy.backoff(kind, n, 0.0) for n in range(1, 100)]
    assert waits == sorted(waits)
    assert waits[-1] == policy.backoff(kind, 99, 0.0)


def test_backoff_follows_the_documented_formula() -> None:
    """backoff = min(wait_max, wait_initial * base ** (n - 1) + jitter * wait_jitter)."""
    policy = RetryPolicy(wait_initial=0.1, wait_max=1.0, wait_exp_base=2, wait_jitter=0.2)
    kind = ErrorKind.UNAVAILABLE  # no per-kind waits by default
    assert policy.backoff(kind, 1, 0.0) == pytest.approx(0.1)
    assert policy.backoff(kind, 2, 0.0) == pytest.approx(0.2)
    assert policy.backoff(kind, 3, 0.5) == pytest.approx(0.4 + 0.1)
    assert policy.backoff(kind, 10, 0.0) == 1.0


def test_per_kind_waits_are_used() -> None:
    """A kind's wait_initial and wait_max replace the policy-wide ones for that kind only."""
    policy = RetryPolicy(
        wait_initial=0.1,
        wait_max=5,
        wait_jitter=0,
        deadlock=KindPolicy(wait_initial=0.01, wait_max=0.02),
        failover=KindPolicy(wait_initial=2),
    )
    assert policy.backoff(ErrorKind.DEADLOCK, 1, 0.0) == pytest.approx(0.01)
    assert policy.backoff(ErrorKind.DEADLOCK, 5, 0.0) == pytest.approx(0.02)
    assert policy.backoff(ErrorKind.FAILOVER, 1, 0.0) == pytest.approx(2)
    assert policy.backoff(ErrorKind.FAILOVER, 3, 0.0) == pytest.approx(5)
    assert policy.backoff(ErrorKind.UNAVAILABLE, 1, 0.0) == pytest.approx(0.1)


def test_default_disconnect_retry_starts_short_and_backs_off() -> None:
    """A lost connection is rerun almost at once, then with growing waits if it keeps failing."""
    policy = RetryPolicy()
    assert policy.backoff(ErrorKind.DISCONNECT, 1, 0.0) == pytest.approx(0.02)
    assert policy.backoff(ErrorKind.DISCONNECT, 4, 0.0) == pytest.approx(0.16)
    assert policy.backoff(ErrorKind.DISCONNECT, 4, 0.5) == pytest.approx(
        0.16 + 0.5 * policy.wait_jitter
    )


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
