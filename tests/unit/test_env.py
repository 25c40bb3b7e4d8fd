"""RetryPolicy.from_env(): settings from RETRYING_UOW_* variables, errors that name them."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from uow import ErrorKind, RetryPolicy


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No RETRYING_UOW_* variable of the developer's shell leaks into these tests."""
    for name in list(os.environ):
        if name.upper().startswith(("RETRYING_UOW_", "MYAPP_")):
            monkeypatch.delenv(name)


def from_env_error(monkeypatch: pytest.MonkeyPatch, **variables: str) -> str:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as excinfo:
        RetryPolicy.from_env()
    return str(excinfo.value)


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


@pytest.mark.parametrize("value", ["none", "None", "null", ""])
def test_from_env_none_lifts_the_count(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """RETRYING_UOW_ATTEMPTS=none (or empty) means no policy-wide count, as the default."""
    monkeypatch.setenv("RETRYING_UOW_ATTEMPTS", value)
    monkeypatch.setenv("RETRYING_UOW_WARN_TRANSACTION_AFTER", value)
    policy = RetryPolicy.from_env()
    assert policy.attempts is None
    assert policy.warn_transaction_after is None


def test_from_env_reads_a_kind_as_a_json_object(monkeypatch: pytest.MonkeyPatch) -> None:
    """RETRYING_UOW_DEADLOCK='{...}' sets several of a kind's fields, keeping its other defaults."""
    monkeypatch.setenv("RETRYING_UOW_DEADLOCK", '{"attempts": 3, "wait_max": 1}')
    monkeypatch.setenv("RETRYING_UOW_INTERRUPTED__RETRY", "true")
    monkeypatch.setenv("RETRYING_UOW_WARN_IDLE_TRANSACTION", "false")
    policy = RetryPolicy.from_env()
    assert (policy.deadlock.attempts, policy.deadlock.wait_max) == (3, 1)
    assert policy.deadlock.wait_initial == 0.01
    assert policy.interrupted.retry is True
    assert policy.warn_idle_transaction is False


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


def test_from_env_partial_kind_setting_keeps_the_kinds_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One per-kind variable changes only that field of the kind."""
    monkeypatch.setenv("RETRYING_UOW_INTERRUPTED__ATTEMPTS", "2")
    monkeypatch.setenv("RETRYING_UOW_PERMANENT__ATTEMPTS", "1")
    policy = RetryPolicy.from_env()
    assert policy.interrupted.retry is False
    assert policy.interrupted.attempts == 2


def test_a_misspelt_variable_names_the_closest_valid_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """RETRYING_UOW_ATTEMPT=3 is an error naming RETRYING_UOW_ATTEMPTS, not silently ignored."""
    message = from_env_error(monkeypatch, RETRYING_UOW_ATTEMPT="3")
    assert "RETRYING_UOW_ATTEMPT: names no setting of the retry policy" in message
    assert "did you mean RETRYING_UOW_ATTEMPTS?" in message


def test_a_misspelt_kind_field_names_the_closest_valid_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A per-kind variable with a typo names the per-kind variable it resembles."""
    message = from_env_error(monkeypatch, RETRYING_UOW_DEADLOCK__ATEMPTS="3")
    assert "did you mean RETRYING_UOW_DEADLOCK__ATTEMPTS?" in message


@pytest.mark.parametrize("value", ["3", "[1, 2]", '"attempts"', "{attempts: 3}"])
def test_a_kind_value_that_is_no_json_object_names_the_form(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """RETRYING_UOW_DEADLOCK must hold a JSON object: the error names it and gives an example."""
    message = from_env_error(monkeypatch, RETRYING_UOW_DEADLOCK=value)
    assert "RETRYING_UOW_DEADLOCK: not a JSON object" in message
    assert "expected a JSON object of the kind's settings" in message


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("RETRYING_UOW_ATTEMPTS", "zero", "a whole number from 1 to 1000, or none"),
        ("RETRYING_UOW_ATTEMPTS", "0", "a whole number from 1 to 1000, or none"),
        ("RETRYING_UOW_ATTEMPTS", "true", "a whole number from 1 to 1000, or none"),
        ("RETRYING_UOW_TIMEOUT", "abc", "seconds, a number above 0 and at most 86400"),
        ("RETRYING_UOW_TIMEOUT", "-1", "seconds, a number above 0 and at most 86400"),
        ("RETRYING_UOW_WAIT_MAX", "1e9", "seconds, a number from 0 to 300"),
        ("RETRYING_UOW_DEADLOCK__ATTEMPTS", "0", "a whole number from 1 to 1000, or none"),
        ("RETRYING_UOW_WARN_IDLE_TRANSACTION", "maybe", "true or false"),
    ],
)
def test_an_invalid_value_names_the_variable_and_the_expected_form(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    """An invalid value fails with the variable's name and what it should look like."""
    message = from_env_error(monkeypatch, **{variable: value})
    assert f"{variable}: " in message
    assert f"expected {expected}" in message


def test_an_invalid_field_in_a_kind_object_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bad field inside RETRYING_UOW_DEADLOCK='{...}' is reported under that variable."""
    message = from_env_error(monkeypatch, RETRYING_UOW_DEADLOCK='{"attempts": 0}')
    assert "RETRYING_UOW_DEADLOCK: " in message
    assert "expected a whole number from 1 to 1000, or none" in message


def test_every_problem_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A typo and a malformed kind are both in one error, so one fix round is enough."""
    message = from_env_error(monkeypatch, RETRYING_UOW_ATTEMPT="3", RETRYING_UOW_LOCK_WAIT="five")
    assert "2 validation errors" in message
    assert "RETRYING_UOW_ATTEMPT:" in message
    assert "RETRYING_UOW_LOCK_WAIT:" in message
