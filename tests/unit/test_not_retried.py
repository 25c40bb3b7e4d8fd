"""Errors that are not retried, and the bounds that end retries: the caller's error comes back."""

from __future__ import annotations

from typing import Any

import pytest
import tenacity

from adapters.memory import SimulatedError
from tests.unit.conftest import (
    CAPPED,
    Task,
    backend_of,
    committed_names,
    create_task,
    make_runner,
)
from uow import ErrorKind, KindPolicy, RetryPolicy, Runner, retry_details
from uow.testing import Fault, inject


def test_permanent_error_is_raised_unchanged_after_one_attempt(units: Runner[Any]) -> None:
    """A permanent error (anything unknown) rolls back and comes back as is, not retried."""
    backend = backend_of(units)
    error = ValueError("bad input")

    def op(uow: Any) -> None:
        uow.tasks.add(Task(name="never"))
        raise error

    with pytest.raises(ValueError, match="bad input") as excinfo:
        units.run(op)
    assert excinfo.value is error
    assert backend.attempts == 1
    assert backend.commits == 0
    details = retry_details(error)
    assert details is not None
    assert (details.attempt, details.kind, details.reason) == (
        1,
        ErrorKind.PERMANENT,
        "not retryable",
    )
    assert committed_names(units) == []


def test_simulated_permanent_error_is_not_retried(units: Runner[Any]) -> None:
    """A simulated permanent failure (e.g. a duplicate key) stops after one attempt."""
    backend = backend_of(units)
    with pytest.raises(SimulatedError), inject(Fault(ErrorKind.PERMANENT, 1062)):
        units.run(create_task, "dup")
    assert backend.attempts == 1
    assert backend.commits == 0


def test_interrupted_is_not_retried_by_default(units: Runner[Any]) -> None:
    """An interrupted statement (KILL QUERY, read timeout) is not rerun by default."""
    backend = backend_of(units)
    with pytest.raises(SimulatedError) as excinfo, inject(Fault(ErrorKind.INTERRUPTED, 1317)):
        units.run(create_task, "x")
    assert backend.attempts == 1
    details = retry_details(excinfo.value)
    assert details is not None
    assert details.kind is ErrorKind.INTERRUPTED
    assert details.reason == "not retryable"


def test_per_operation_policy_override(units: Runner[Any]) -> None:
    """using(policy=...) applies another policy on the same store, leaving the original alone."""
    backend = backend_of(units)
    strict = units.using(policy=units.policy.override(attempts=2))
    with pytest.raises(SimulatedError), inject(Fault.disconnect(at=1, times=2)):
        strict.run(create_task, "x")
    assert backend.attempts == 2
    assert strict.backend is units.backend
    assert strict.policy.attempts == 2
    assert units.policy.attempts is None
    with inject(Fault.disconnect(at=1, times=4)):
        assert units.run(create_task, "y").name == "y"
    assert backend.attempts == 7


@pytest.mark.usefixtures("instant")
def test_per_kind_attempts_cap_in_the_runner() -> None:
    """deadlock.attempts=2 stops a deadlocking operation after two attempts."""
    runner = make_runner(RetryPolicy(deadlock=KindPolicy(attempts=2)))
    backend = backend_of(runner)
    with pytest.raises(SimulatedError) as excinfo, inject(Fault.deadlock(at=1, times=5)):
        runner.run(create_task, "x")
    assert backend.attempts == 2
    details = retry_details(excinfo.value)
    assert details is not None
    assert details.max_attempts == 2


def test_keyboard_interrupt_is_not_retried_and_propagates(units: Runner[Any]) -> None:
    """Ctrl-C inside an operation stops it at once: no rerun, no commit."""
    backend = backend_of(units)

    def op(uow: Any) -> None:
        uow.tasks.add(Task(name="half"))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        units.run(op)
    assert backend.attempts == 1
    assert backend.commits == 0
    assert committed_names(units) == []


def test_exhaustion_raises_the_original_exception_not_retry_error(capped: Runner[Any]) -> None:
    """After the last attempt the caller gets the driver's error, never tenacity.RetryError."""
    with pytest.raises(Exception) as excinfo, inject(Fault.disconnect(at=1, times=5)):
        capped.run(create_task, "x")
    assert type(excinfo.value) is SimulatedError
    assert not isinstance(excinfo.value, tenacity.RetryError)
    details = retry_details(excinfo.value)
    assert details is not None
    assert details.attempt == details.max_attempts == 5
    assert details.reason == "attempts exhausted"
    assert details.kind is ErrorKind.DISCONNECT
    assert details.errno == 2013
    assert details.will_retry is False
    assert details.error is excinfo.value


def test_exhausted_error_carries_a_note(capped: Runner[Any]) -> None:
    """The given-up error's notes say which operation gave up, after how many attempts."""
    with pytest.raises(SimulatedError) as excinfo, inject(Fault.disconnect(at=1, times=5)):
        capped.run(create_task, "x")
    notes = getattr(excinfo.value, "__notes__", [])
    assert len(notes) == 1
    assert "'create_task'" in notes[0]
    assert "5/5" in notes[0]
    assert "attempts exhausted" in notes[0]


def test_retry_details_of_an_unrelated_error_is_none() -> None:
    """retry_details() is None for an error that never left an operation."""
    assert retry_details(ValueError("x")) is None


@pytest.mark.usefixtures("instant")
def test_tenacity_try_again_cannot_escape_the_attempt_bound() -> None:
    """An operation raising tenacity.TryAgain is still bounded: TryAgain is permanent."""
    runner = make_runner(CAPPED.override(attempts=3))
    backend = backend_of(runner)
    calls = 0

    class Runaway(Exception):
        pass

    def op(uow: Any) -> None:
        nonlocal calls
        calls += 1
        if calls > 10:
            raise Runaway
        uow.tasks.all()
        raise tenacity.TryAgain

    with pytest.raises(tenacity.TryAgain), inject(Fault.disconnect(at=1)):
        runner.run(op)
    assert backend.attempts == 2  # the disconnect is retried; TryAgain is not
    assert calls == 2
