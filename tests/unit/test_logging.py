"""Logging: one WARNING per scheduled retry, one ERROR on give-up, structured fields, no noise."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from adapters.memory import SimulatedError
from tests.unit.conftest import LOGGER, create_task, make_runner, records
from uow import ErrorKind, RetryDetails, Runner
from uow.testing import Fault, inject


def test_one_warning_per_scheduled_retry(
    capped: Runner[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Each scheduled retry logs one WARNING naming operation, attempt of max, kind, errno, wait."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    with inject(Fault(ErrorKind.UNAVAILABLE, 2003, times=2)):
        capped.run(create_task, "x")
    warnings = records(caplog, logging.WARNING)
    assert len(warnings) == 2
    assert records(caplog, logging.ERROR) == []
    for number, record in enumerate(warnings, start=1):
        message = record.getMessage()
        assert "retrying create_task" in message
        assert f"attempt {number}/5 failed" in message
        assert "kind=unavailable" in message
        assert "errno=2003" in message
        assert f"next attempt in {record.uow_wait:.3f} s" in message  # type: ignore[attr-defined]
        assert "of 30 s of the time budget spent" in message


def test_warning_of_a_kind_bounded_by_time_has_no_maximum(
    units: Runner[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Without a count for the kind the line says 'attempt 1 failed', never '1/None'."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with inject(Fault.disconnect(at=1)):
        units.run(create_task, "x")
    (warning,) = records(caplog, logging.WARNING)
    assert "attempt 1 failed" in warning.getMessage()
    assert "None" not in warning.getMessage()
    assert warning.uow_max_attempts is None  # type: ignore[attr-defined]


def test_warning_without_errno_omits_it(
    units: Runner[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A failure without an errno does not print 'errno=None'."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with inject(Fault(ErrorKind.DISCONNECT)):
        units.run(create_task, "x")
    (warning,) = records(caplog, logging.WARNING)
    assert "errno" not in warning.getMessage()


def test_one_error_on_give_up(units: Runner[Any], caplog: pytest.LogCaptureFixture) -> None:
    """Exhaustion logs a WARNING for each of the first max-1 failures and one ERROR."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with pytest.raises(SimulatedError), inject(Fault.deadlock(at=1, times=5)):
        units.run(create_task, "x")
    assert len(records(caplog, logging.WARNING)) == 4
    (error,) = records(caplog, logging.ERROR)
    message = error.getMessage()
    assert "giving up on create_task" in message
    assert "attempt 5/5" in message
    assert "kind=deadlock" in message
    assert "errno=1213" in message
    assert "attempts exhausted" in message


def test_log_records_carry_structured_fields(
    units: Runner[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Retry log records carry uow_* extra fields for structured logging."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with pytest.raises(SimulatedError), inject(Fault.failover(at=1, times=2)):
        units.using(policy=units.policy.override(attempts=2)).run(create_task, "x")
    (warning,) = records(caplog, logging.WARNING)
    (error,) = records(caplog, logging.ERROR)
    fields: dict[str, Any] = {
        name: getattr(warning, name)
        for name in (
            "uow_operation",
            "uow_attempt",
            "uow_max_attempts",
            "uow_kind",
            "uow_errno",
            "uow_error_type",
            "uow_will_retry",
            "uow_reason",
        )
    }
    assert fields == {
        "uow_operation": "create_task",
        "uow_attempt": 1,
        "uow_max_attempts": 2,
        "uow_kind": "failover",
        "uow_errno": 1290,
        "uow_error_type": "adapters.memory.SimulatedError",
        "uow_will_retry": True,
        "uow_reason": "",
    }
    assert warning.uow_wait >= 0  # type: ignore[attr-defined]
    assert error.uow_attempt == 2  # type: ignore[attr-defined]
    assert error.uow_will_retry is False  # type: ignore[attr-defined]
    assert error.uow_reason == "attempts exhausted"  # type: ignore[attr-defined]


def test_permanent_error_logs_nothing(units: Runner[Any], caplog: pytest.LogCaptureFixture) -> None:
    """An error that is simply not retryable is the caller's to log: no WARNING, no ERROR."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with pytest.raises(ZeroDivisionError):
        units.run(lambda _uow: 1 / 0)
    assert records(caplog, logging.WARNING) == []
    assert records(caplog, logging.ERROR) == []


def test_hooks_see_an_error_that_is_never_retried() -> None:
    """Hooks get one record for a non-retryable error (reason "not retryable"), for metrics."""
    seen: list[RetryDetails] = []
    runner = make_runner(hooks=[seen.append])
    with pytest.raises(ZeroDivisionError) as excinfo:
        runner.run(lambda _uow: 1 / 0)
    (details,) = seen
    assert details.reason == "not retryable"
    assert details.will_retry is False
    assert details.kind is ErrorKind.PERMANENT
    assert details.attempt == 1
    assert details.error is excinfo.value


def test_block_form_logs_its_name(units: Runner[Any], caplog: pytest.LogCaptureFixture) -> None:
    """The block form's operation name given to attempts() appears in the log."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with inject(Fault.disconnect(at=1)):
        for attempt in units.attempts("import_batch"):
            with attempt as unit:
                unit.tasks.all()
    (warning,) = records(caplog, logging.WARNING)
    assert "retrying import_batch" in warning.getMessage()
    assert warning.uow_operation == "import_batch"  # type: ignore[attr-defined]
