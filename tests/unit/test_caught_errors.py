"""Transient errors the operation caught: never committed, and they decide the attempt."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from adapters.memory import SimulatedError
from tests.unit.conftest import CAPPED, Task, backend_of, committed_names, make_runner
from uow import (
    ErrorKind,
    RetryDetails,
    Runner,
    TransactionControlError,
    UnitOfWorkError,
    retry_details,
)
from uow.testing import Fault, inject

CAUGHT_AND_FAILED = "the operation caught this error, went on, and then failed with"
CAUGHT_AND_RETURNED = "the operation caught this error and returned; its attempt was not committed"


class StandInPendingRollbackError(RuntimeError):
    """What SQLAlchemy raises when a session is used after an error it did not roll back."""


def catch_then(raise_after: BaseException | None) -> Any:
    """An operation that adds a task, catches a failed read, then raises (or returns)."""

    def operation(uow: Any) -> str:
        uow.tasks.add(Task(name="first"))
        try:
            uow.tasks.all()  # statement 1 is the flush of "first", statement 2 the read
        except SimulatedError:
            if raise_after is not None:
                raise raise_after from None
        uow.tasks.add(Task(name="second"))
        return "done"

    return operation


@pytest.mark.usefixtures("instant")
@pytest.mark.parametrize(
    "then_raised",
    [ValueError("bad state"), StandInPendingRollbackError("rolled back")],
    ids=["ValueError", "PendingRollbackError"],
)
def test_error_after_a_caught_disconnect_is_judged_by_the_disconnect(
    then_raised: Exception,
) -> None:
    """Catching a disconnect and failing otherwise reruns the operation as the disconnect would."""
    seen: list[RetryDetails] = []
    runner = make_runner(hooks=[seen.append])
    with inject(Fault.disconnect(at=2)):
        assert runner.run(catch_then(then_raised)) == "done"
    backend = backend_of(runner)
    assert (backend.attempts, backend.commits) == (2, 1)
    assert committed_names(runner) == ["first", "second"]
    (details,) = seen
    assert (details.kind, details.errno, details.will_retry) == (ErrorKind.DISCONNECT, 2013, True)
    assert isinstance(details.error, SimulatedError)
    notes = getattr(details.error, "__notes__", [])
    assert any(
        CAUGHT_AND_FAILED in note and type(then_raised).__qualname__ in note for note in notes
    )


@pytest.mark.usefixtures("instant")
def test_give_up_after_caught_disconnects_raises_the_disconnect_with_a_note() -> None:
    """When every attempt caught a disconnect and failed otherwise, the disconnect is raised."""
    runner = make_runner(CAPPED.override(attempts=3))
    with pytest.raises(SimulatedError) as excinfo, inject(Fault.disconnect(at=2, times=3)):
        runner.run(catch_then(ValueError("bad state")))
    details = retry_details(excinfo.value)
    assert details is not None
    assert (details.kind, details.attempt, details.reason) == (
        ErrorKind.DISCONNECT,
        3,
        "attempts exhausted",
    )
    notes = excinfo.value.__notes__
    assert any(f"{CAUGHT_AND_FAILED} builtins.ValueError" in note for note in notes)
    assert any("gave up after attempt 3/3" in note for note in notes)
    assert backend_of(runner).commits == 0


@pytest.mark.usefixtures("instant")
def test_caught_disconnect_and_a_normal_return_is_not_committed_but_rerun() -> None:
    """An operation that swallows a disconnect and returns is rolled back and rerun."""
    runner = make_runner()
    with inject(Fault.disconnect(at=2)) as injection:
        assert runner.run(catch_then(None)) == "done"
    backend = backend_of(runner)
    assert (backend.attempts, backend.commits) == (2, 1)
    assert committed_names(runner) == ["first", "second"]
    (fired,) = injection.fired
    assert fired.kind is ErrorKind.DISCONNECT
    assert [p.at for p in injection.points if p.attempt == 1] == [1, 2]  # COMMIT never reached


@pytest.mark.usefixtures("instant")
def test_swallowed_error_on_give_up_is_raised_with_its_note() -> None:
    """If every attempt swallows the error, the caller gets it, noted as caught, uncommitted."""
    runner = make_runner(CAPPED.override(attempts=2))
    with pytest.raises(SimulatedError) as excinfo, inject(Fault.deadlock(at=2, times=2)):
        runner.run(catch_then(None))
    assert any(CAUGHT_AND_RETURNED in note for note in excinfo.value.__notes__)
    assert backend_of(runner).commits == 0


@pytest.mark.parametrize(
    "own_error",
    [UnitOfWorkError("misuse"), TransactionControlError("session.commit() refused")],
    ids=["UnitOfWorkError", "TransactionControlError"],
)
def test_library_error_after_a_caught_disconnect_is_raised_as_it_is(
    units: Runner[Any], own_error: UnitOfWorkError
) -> None:
    """The library's own errors are never replaced by a disconnect the operation caught."""
    with pytest.raises(UnitOfWorkError) as excinfo, inject(Fault.disconnect(at=2)):
        units.run(catch_then(own_error))
    assert excinfo.value is own_error
    assert backend_of(units).attempts == 1
    assert backend_of(units).commits == 0
    details = retry_details(own_error)
    assert details is not None
    assert (details.kind, details.reason) == (ErrorKind.PERMANENT, "not retryable")


def test_interrupt_after_a_caught_disconnect_is_raised_as_it_is(units: Runner[Any]) -> None:
    """A KeyboardInterrupt is never replaced by a disconnect the operation caught."""
    with pytest.raises(KeyboardInterrupt), inject(Fault.disconnect(at=2)):
        units.run(catch_then(KeyboardInterrupt()))
    assert (backend_of(units).attempts, backend_of(units).commits) == (1, 0)


def test_error_after_a_caught_permanent_error_is_the_one_raised(units: Runner[Any]) -> None:
    """Only transient caught errors decide: after a caught permanent one, the new error stands."""
    error = ValueError("mine")
    with (
        pytest.raises(ValueError, match="mine") as excinfo,
        inject(Fault(ErrorKind.PERMANENT, 1062, at=2)),
    ):
        units.run(catch_then(error))
    assert excinfo.value is error
    assert backend_of(units).attempts == 1


def test_swallowed_permanent_error_does_not_block_the_commit(units: Runner[Any]) -> None:
    """Catching a permanent error is the operation's business: the attempt commits once."""

    def insert_or_ignore(uow: Any) -> None:
        with contextlib.suppress(SimulatedError):
            uow.tasks.all()
        uow.tasks.add(Task(name="kept"))

    with inject(Fault(ErrorKind.PERMANENT, 1062, at=1)):
        units.run(insert_or_ignore)
    assert (backend_of(units).attempts, backend_of(units).commits) == (1, 1)
    assert committed_names(units) == ["kept"]


def test_block_form_does_not_commit_a_caught_disconnect(units: Runner[Any]) -> None:
    """Inline code that swallows a disconnect is rerun by the block form's loop too."""
    caught: list[int] = []
    with inject(Fault.disconnect(at=1)):
        for attempt in units.attempts("inline"):
            with attempt as uow:
                try:
                    uow.tasks.all()
                except SimulatedError as error:
                    caught.append(error.errno or 0)
                uow.tasks.add(Task(name="inline"))
    assert caught == [2013]
    assert (backend_of(units).attempts, backend_of(units).commits) == (2, 1)
    assert committed_names(units) == ["inline"]


def test_disconnect_caught_in_a_joined_operation_fails_the_outer_attempt(
    units: Runner[Any],
) -> None:
    """A nested operation that swallows a disconnect cannot let the outer attempt commit."""

    def inner(uow: Any) -> None:
        with contextlib.suppress(SimulatedError):
            uow.tasks.all()

    def outer(uow: Any) -> None:
        uow.tasks.add(Task(name="outer"))
        units.run(inner)

    with inject(Fault.disconnect(at=1)):
        units.run(outer)
    assert (backend_of(units).attempts, backend_of(units).commits) == (2, 1)
    assert committed_names(units) == ["outer"]
