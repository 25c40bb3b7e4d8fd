"""Retry hooks: one frozen record per failed attempt; a broken hook never breaks the operation."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from adapters.memory import SimulatedError
from tests.unit.conftest import CAPPED, LOGGER, backend_of, create_task, make_runner, records
from uow import ErrorKind, Reason, RetryDetails
from uow.testing import Fault, inject


@pytest.mark.usefixtures("instant")
def test_hooks_receive_each_retry_and_the_give_up() -> None:
    """A hook sees one record per scheduled retry and one for the give-up, in order."""
    seen: list[RetryDetails] = []
    runner = make_runner(CAPPED.override(attempts=3), hooks=[seen.append])
    with pytest.raises(SimulatedError), inject(Fault.disconnect(at=1, errno=2006, times=3)):
        runner.run(create_task, "x")
    assert [(d.attempt, d.will_retry) for d in seen] == [(1, True), (2, True), (3, False)]
    assert all(d.operation == "create_task" for d in seen)
    assert all(d.kind is ErrorKind.DISCONNECT and d.errno == 2006 for d in seen)
    assert [d.reason for d in seen] == [
        Reason.WILL_RETRY,
        Reason.WILL_RETRY,
        Reason.ATTEMPTS_EXHAUSTED,
    ]
    assert all(d.max_attempts == 3 for d in seen)
    assert all(d.timeout == 30.0 for d in seen)


@pytest.mark.usefixtures("instant")
def test_hook_records_are_frozen() -> None:
    """The record a hook receives cannot be changed (frozen, slotted dataclass)."""
    seen: list[RetryDetails] = []
    runner = make_runner(hooks=[seen.append])
    with inject(Fault.disconnect(at=1)):
        runner.run(create_task, "x")
    (details,) = seen
    with pytest.raises(dataclasses.FrozenInstanceError):
        details.attempt = 9  # type: ignore[misc]
    assert not hasattr(details, "__dict__")


@pytest.mark.usefixtures("instant")
def test_raising_hook_is_logged_and_does_not_break_the_operation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A hook that raises is logged with its traceback; the operation and later hooks go on."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    later: list[RetryDetails] = []

    def broken(_details: RetryDetails) -> None:
        raise RuntimeError("metrics backend down")

    runner = make_runner(hooks=[broken, later.append])
    with inject(Fault.disconnect(at=1)):
        task = runner.run(create_task, "x")
    assert task.name == "x"
    assert len(later) == 1
    failures = [r for r in records(caplog, logging.ERROR) if "hook" in r.getMessage()]
    assert len(failures) == 1
    assert "broken" in failures[0].getMessage()
    assert failures[0].exc_info is not None
    assert isinstance(failures[0].exc_info[1], RuntimeError)
    assert backend_of(runner).commits == 1


@pytest.mark.usefixtures("instant")
def test_hooks_are_kept_by_using() -> None:
    """A runner derived with using() keeps the original's hooks."""
    seen: list[RetryDetails] = []
    runner = make_runner(hooks=[seen.append]).using(idempotent=True)
    with inject(Fault.disconnect(at=1)):
        runner.run(create_task, "x")
    assert len(seen) == 1


@pytest.mark.usefixtures("instant")
def test_log_fields_are_flat_and_carry_no_error_text() -> None:
    """log_fields() gives flat uow_* values only: no message, no SQL, no parameters."""
    seen: list[RetryDetails] = []
    runner = make_runner(hooks=[seen.append])
    with inject(Fault.deadlock(at=1)):
        runner.run(create_task, "x")
    fields = seen[0].log_fields()
    assert all(name.startswith("uow_") for name in fields)
    assert all(
        value is None or isinstance(value, str | int | float | bool) for value in fields.values()
    )
    assert fields["uow_kind"] == "deadlock"
    assert "simulated" not in repr(fields)
