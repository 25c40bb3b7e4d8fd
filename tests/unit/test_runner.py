"""The runner on the in-memory adapter: reruns, commit ownership, logging, hooks, nesting."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
from typing import TYPE_CHECKING, Any

import pytest
import tenacity

import uow
from adapters.memory import InMemoryUnitOfWork, SimulatedError
from tests.unit.conftest import FakeClock, Task, backend_of, make_runner
from uow import (
    AttemptInfo,
    Classification,
    CommitOutcomeUnknown,
    ErrorKind,
    KindPolicy,
    RetryDetails,
    RetryPolicy,
    Runner,
    UnitOfWorkClosedError,
    _config,
    _runner,
    retry_details,
)
from uow.testing import is_testing, set_testing

if TYPE_CHECKING:
    from collections.abc import Callable

LOGGER = "retrying_uow"


def create_task(uow: Any, name: str) -> Task:
    """A domain service: adds one task and returns it."""
    return uow.tasks.add(Task(name=name))


def create_two_tasks(uow: Any, first: str, second: str) -> list[Task]:
    """Two statements, so a fault at statement 2 hits after a write."""
    return [uow.tasks.add(Task(name=first)), uow.tasks.add(Task(name=second))]


def committed_names(runner: Runner[Any]) -> list[str]:
    return sorted(task.name for task in runner.run(lambda uow: uow.tasks.all()))


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == level]


def run_block(runner: Runner[Any], name: str) -> Task:
    for attempt in runner.attempts("create_task"):
        with attempt as unit:
            task = create_task(unit, name)
    return task


def run_call(runner: Runner[Any], name: str) -> Task:
    return runner.run(create_task, name)


def run_decorated(runner: Runner[Any], name: str) -> Task:
    return runner.operation(create_task)(name)


ENTRY_POINTS: list[Callable[[Runner[Any], str], Task]] = [run_call, run_decorated, run_block]


# --- reruns -------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=["run", "operation", "attempts"])
def test_every_entry_point_reruns_after_a_disconnect(
    units: Runner[Any], entry: Callable[[Runner[Any], str], Task]
) -> None:
    """run, the decorator and the block form all rerun a lost connection the same way."""
    backend = backend_of(units)
    backend.fail(ErrorKind.DISCONNECT, errno=2013, times=2)
    task = entry(units, "t0001")
    assert task.name == "t0001"
    assert task.id is not None
    assert backend.attempts == 3
    assert backend.commits == 1
    assert committed_names(units) == ["t0001"]


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=["run", "operation", "attempts"])
def test_every_entry_point_gives_up_the_same_way(
    units: Runner[Any], entry: Callable[[Runner[Any], str], Task]
) -> None:
    """All entry points raise the original error after the policy's attempts, with details."""
    backend = backend_of(units)
    backend.fail(ErrorKind.DEADLOCK, errno=1213, times=5)
    with pytest.raises(SimulatedError) as excinfo:
        entry(units, "t0001")
    details = retry_details(excinfo.value)
    assert details is not None
    assert (details.attempt, details.max_attempts) == (5, 5)
    assert details.reason == "attempts exhausted"
    assert backend.attempts == 5
    assert backend.commits == 0


def test_rerun_ends_with_exactly_one_committed_entity(units: Runner[Any]) -> None:
    """After a disconnect at the second statement the store holds one copy of each write."""
    backend = backend_of(units)
    backend.fail(ErrorKind.DISCONNECT, errno=2006, statement=2)
    tasks = units.run(create_two_tasks, "a", "b")
    assert [t.name for t in tasks] == ["a", "b"]
    assert backend.attempts == 2
    assert backend.commits == 1
    assert committed_names(units) == ["a", "b"]


def test_failed_attempts_writes_are_dropped(units: Runner[Any]) -> None:
    """Changes made by a failed attempt (insert and update) never reach the store."""
    backend = backend_of(units)
    existing = units.run(create_task, "existing")
    seen: list[list[tuple[str, bool]]] = []

    def finish_and_add(uow: Any) -> None:
        seen.append([(t.name, t.done) for t in uow.tasks.all()])
        uow.tasks.get(existing.id).done = True
        uow.tasks.add(Task(name="new"))
        uow.tasks.all()  # statement 4 fails on the first attempt

    backend.fail(ErrorKind.LOCK_WAIT, errno=1205, statement=4)
    units.run(finish_and_add)
    assert seen == [[("existing", False)], [("existing", False)]]
    stored = units.run(lambda uow: {t.name: t.done for t in uow.tasks.all()})
    assert stored == {"existing": True, "new": False}


def test_successful_operation_runs_once_and_commits_once(units: Runner[Any]) -> None:
    """Without failures there is one attempt and one commit, and the result comes back."""
    backend = backend_of(units)
    task = units.run(create_task, "once")
    assert (backend.attempts, backend.commits) == (1, 1)
    assert task.name == "once"


def test_arguments_reach_the_operation(units: Runner[Any]) -> None:
    """Positional and keyword arguments are passed after the unit of work, on every attempt."""
    calls: list[tuple[Any, ...]] = []

    def op(uow: Any, a: int, *, b: str) -> str:
        calls.append((a, b))
        uow.tasks.all()
        return f"{a}{b}"

    backend_of(units).fail(ErrorKind.UNAVAILABLE, errno=2003)
    assert units.run(op, 1, b="x") == "1x"
    assert calls == [(1, "x"), (1, "x")]


def test_decorator_keeps_name_and_docstring(units: Runner[Any]) -> None:
    """operation() wraps with functools.wraps, so the decorated function looks the same."""
    decorated = units.operation(create_task)
    assert decorated.__name__ == "create_task"
    assert decorated.__doc__ == create_task.__doc__
    assert decorated.__wrapped__ is create_task  # type: ignore[attr-defined]


def test_each_attempt_gets_a_fresh_unit_of_work(units: Runner[Any]) -> None:
    """A rerun never reuses the failed attempt's unit of work."""
    seen: list[Any] = []

    def op(uow: Any) -> None:
        seen.append(uow)
        uow.tasks.all()

    backend_of(units).fail(ErrorKind.DISCONNECT, times=2)
    units.run(op)
    assert len(seen) == 3
    assert len({id(u) for u in seen}) == 3
    assert not any(u.active for u in seen)


def test_fault_at_a_later_statement(units: Runner[Any]) -> None:
    """fail(statement=N) hits the N-th repository call, not the first."""
    backend = backend_of(units)
    calls: list[int] = []

    def op(uow: Any) -> None:
        for n in range(1, 4):
            calls.append(n)
            uow.tasks.all()

    backend.fail(ErrorKind.DISCONNECT, statement=3)
    units.run(op)
    assert calls == [1, 2, 3, 1, 2, 3]


# --- errors that are not retried ------------------------------------------------------------


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
    backend.fail(ErrorKind.PERMANENT, errno=1062)
    with pytest.raises(SimulatedError):
        units.run(create_task, "dup")
    assert backend.attempts == 1


def test_interrupted_is_not_retried_by_default(units: Runner[Any]) -> None:
    """An interrupted statement (KILL QUERY, read timeout) is not rerun by default."""
    backend = backend_of(units)
    backend.fail(ErrorKind.INTERRUPTED, errno=1317)
    with pytest.raises(SimulatedError) as excinfo:
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
    backend.fail(ErrorKind.DISCONNECT, times=2)
    with pytest.raises(SimulatedError):
        strict.run(create_task, "x")
    assert backend.attempts == 2
    assert strict.backend is units.backend
    assert units.policy.attempts == 5
    backend.fail(ErrorKind.DISCONNECT, times=4)
    assert units.run(create_task, "y").name == "y"
    assert backend.attempts == 7


@pytest.mark.usefixtures("instant")
def test_per_kind_attempts_cap_in_the_runner() -> None:
    """deadlock.attempts=2 stops a deadlocking operation after two attempts."""
    runner = make_runner(RetryPolicy(deadlock=KindPolicy(attempts=2)))
    backend = backend_of(runner)
    backend.fail(ErrorKind.DEADLOCK, errno=1213, times=5)
    with pytest.raises(SimulatedError) as excinfo:
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


def test_exhaustion_raises_the_original_exception_not_retry_error(units: Runner[Any]) -> None:
    """After the last attempt the caller gets the driver's error, never tenacity.RetryError."""
    backend = backend_of(units)
    backend.fail(ErrorKind.DISCONNECT, errno=2013, times=5)
    with pytest.raises(Exception) as excinfo:
        units.run(create_task, "x")
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


def test_exhausted_error_carries_a_note(units: Runner[Any]) -> None:
    """The given-up error's notes say which operation gave up, after how many attempts."""
    backend_of(units).fail(ErrorKind.DISCONNECT, times=5)
    with pytest.raises(SimulatedError) as excinfo:
        units.run(create_task, "x")
    notes = getattr(excinfo.value, "__notes__", [])
    assert len(notes) == 1
    assert "'create_task'" in notes[0]
    assert "5/5" in notes[0]
    assert "attempts exhausted" in notes[0]


def test_retry_details_of_an_unrelated_error_is_none() -> None:
    """retry_details() is None for an error that never left an operation."""
    assert retry_details(ValueError("x")) is None


def test_remaining_faults_are_retried_by_the_next_operation(units: Runner[Any]) -> None:
    """Faults left over after one operation gave up are transient again for the next one."""
    backend = backend_of(units)
    backend.fail(ErrorKind.DISCONNECT, times=7)
    with pytest.raises(SimulatedError):
        units.run(create_task, "first")
    assert units.run(create_task, "second").name == "second"
    assert backend.attempts == 8


@pytest.mark.usefixtures("instant")
def test_tenacity_try_again_cannot_escape_the_attempt_bound() -> None:
    """An operation raising tenacity.TryAgain is still bounded by the policy's attempts."""
    runner = make_runner(RetryPolicy(attempts=3))
    backend = backend_of(runner)
    backend.fail(ErrorKind.DISCONNECT)
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

    with pytest.raises(tenacity.TryAgain):
        runner.run(op)
    assert backend.attempts == 2  # the disconnect is retried; TryAgain is permanent


# --- commit outcome --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [ErrorKind.DISCONNECT, ErrorKind.FAILOVER])
def test_lost_commit_raises_commit_outcome_unknown(units: Runner[Any], kind: ErrorKind) -> None:
    """A connection lost during COMMIT is not rerun: CommitOutcomeUnknown, chained, data once."""
    backend = backend_of(units)
    backend.fail(kind, errno=2013, at="commit", committed=True)
    with pytest.raises(CommitOutcomeUnknown) as excinfo:
        units.run(create_task, "paid")
    error = excinfo.value
    assert isinstance(error.__cause__, SimulatedError)
    assert error.__cause__.kind is kind
    assert error.operation == "create_task"
    assert error.attempt == 1
    assert "COMMIT" in str(error)
    assert backend.attempts == 1
    assert backend.commits == 1
    assert committed_names(units) == ["paid"]


def test_lost_commit_that_did_not_commit_is_still_not_rerun(units: Runner[Any]) -> None:
    """The runner cannot tell a lost COMMIT that failed from one that succeeded: no rerun."""
    backend = backend_of(units)
    backend.fail(ErrorKind.DISCONNECT, at="commit", committed=False)
    with pytest.raises(CommitOutcomeUnknown):
        units.run(create_task, "x")
    assert backend.attempts == 1
    assert committed_names(units) == []


def test_lost_commit_of_an_idempotent_operation_reruns(units: Runner[Any]) -> None:
    """using(idempotent=True) reruns after a lost COMMIT instead of raising."""
    backend = backend_of(units)

    def upsert(uow: Any) -> Task:
        return uow.tasks.add(Task(name="singleton", id=42))

    backend.fail(ErrorKind.DISCONNECT, errno=2013, at="commit", committed=True)
    task = units.using(idempotent=True).run(upsert)
    assert task.id == 42
    assert backend.attempts == 2
    assert backend.commits == 2
    assert committed_names(units) == ["singleton"]


@pytest.mark.parametrize(
    ("kind", "errno"),
    [(ErrorKind.DEADLOCK, 1213), (ErrorKind.LOCK_WAIT, 1205), (ErrorKind.UNAVAILABLE, 1040)],
)
def test_known_failure_at_commit_reruns(units: Runner[Any], kind: ErrorKind, errno: int) -> None:
    """A server answer at COMMIT (deadlock, lock wait) means not committed, so it reruns."""
    backend = backend_of(units)
    backend.fail(kind, errno=errno, at="commit")
    task = units.run(create_task, "t")
    assert task.name == "t"
    assert backend.attempts == 2
    assert backend.commits == 1
    assert committed_names(units) == ["t"]


def test_commit_outcome_unknown_is_a_library_error() -> None:
    """CommitOutcomeUnknown is a UnitOfWorkError, so callers can catch the family."""
    assert issubclass(CommitOutcomeUnknown, uow.UnitOfWorkError)
    assert issubclass(UnitOfWorkClosedError, uow.UnitOfWorkError)


# --- closed units of work -----------------------------------------------------------------


def test_unit_of_work_used_after_its_attempt_raises(units: Runner[Any]) -> None:
    """A unit of work kept past its operation refuses work with UnitOfWorkClosedError."""
    kept = units.run(lambda uow: uow)
    assert kept.active is False
    with pytest.raises(UnitOfWorkClosedError, match="has ended"):
        kept.tasks.add(Task(name="late"))
    assert committed_names(units) == []


def test_repository_used_after_its_attempt_raises(units: Runner[Any]) -> None:
    """A repository kept past its operation refuses work too."""
    repository = units.run(lambda uow: uow.tasks)
    with pytest.raises(UnitOfWorkClosedError, match="lambda"):
        repository.all()


def test_unit_of_work_is_active_inside_the_operation(units: Runner[Any]) -> None:
    """Inside the operation the unit of work reports itself active."""
    assert units.run(lambda uow: uow.active) is True


def test_unknown_repository_raises_attribute_error_naming_known_ones(units: Runner[Any]) -> None:
    """A misspelt repository is an AttributeError listing the repositories there are."""
    backend = backend_of(units)
    with pytest.raises(AttributeError, match=r"'taks'.*tasks"):
        units.run(lambda uow: uow.taks)
    assert backend.attempts == 1


@pytest.mark.usefixtures("instant")
def test_unit_of_work_without_repositories_says_none() -> None:
    """With no repositories registered the message says so."""
    runner = InMemoryUnitOfWork.factory()
    with pytest.raises(AttributeError, match=r"repositories: none"):
        runner.run(lambda uow: uow.tasks)


def test_getattr_on_an_uninitialised_unit_of_work_raises_attribute_error() -> None:
    """__getattr__ keeps Python's contract (AttributeError), so copy and hasattr work."""
    bare = InMemoryUnitOfWork.__new__(InMemoryUnitOfWork)
    assert not hasattr(bare, "tasks")


# --- logging ---------------------------------------------------------------------------------


def test_one_warning_per_scheduled_retry(
    units: Runner[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Each scheduled retry logs one WARNING naming operation, attempt of max, kind, errno, wait."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    backend_of(units).fail(ErrorKind.UNAVAILABLE, errno=2003, times=2)
    units.run(create_task, "x")
    warnings = records(caplog, logging.WARNING)
    assert len(warnings) == 2
    assert records(caplog, logging.ERROR) == []
    for number, record in enumerate(warnings, start=1):
        message = record.getMessage()
        assert "create_task" in message
        assert f"attempt {number}/5" in message
        assert "kind=unavailable" in message
        assert "errno=2003" in message
        assert f"next attempt in {record.uow_wait:.3f} s" in message  # type: ignore[attr-defined]


def test_warning_without_errno_omits_it(
    units: Runner[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A failure without an errno does not print 'errno=None'."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    backend_of(units).fail(ErrorKind.DISCONNECT)
    units.run(create_task, "x")
    (warning,) = records(caplog, logging.WARNING)
    assert "errno" not in warning.getMessage()


def test_one_error_on_give_up(units: Runner[Any], caplog: pytest.LogCaptureFixture) -> None:
    """Exhaustion logs a WARNING for each of the first max-1 failures and one ERROR."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    backend_of(units).fail(ErrorKind.DEADLOCK, errno=1213, times=5)
    with pytest.raises(SimulatedError):
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
    backend_of(units).fail(ErrorKind.FAILOVER, errno=1290, times=2)
    with pytest.raises(SimulatedError):
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
    backend_of(units).fail(ErrorKind.DISCONNECT)
    for attempt in units.attempts("import_batch"):
        with attempt as unit:
            unit.tasks.all()
    (warning,) = records(caplog, logging.WARNING)
    assert "retrying import_batch" in warning.getMessage()


# --- hooks -----------------------------------------------------------------------------------


@pytest.mark.usefixtures("instant")
def test_hooks_receive_each_retry_and_the_give_up() -> None:
    """A hook sees one record per scheduled retry and one for the give-up, in order."""
    seen: list[RetryDetails] = []
    runner = make_runner(RetryPolicy(attempts=3), hooks=[seen.append])
    backend_of(runner).fail(ErrorKind.DISCONNECT, errno=2006, times=3)
    with pytest.raises(SimulatedError):
        runner.run(create_task, "x")
    assert [(d.attempt, d.will_retry) for d in seen] == [(1, True), (2, True), (3, False)]
    assert all(d.operation == "create_task" for d in seen)
    assert all(d.kind is ErrorKind.DISCONNECT and d.errno == 2006 for d in seen)
    assert seen[-1].reason == "attempts exhausted"
    assert all(d.max_attempts == 3 for d in seen)


@pytest.mark.usefixtures("instant")
def test_hook_records_are_frozen() -> None:
    """The record a hook receives cannot be changed (frozen, slotted dataclass)."""
    seen: list[RetryDetails] = []
    runner = make_runner(hooks=[seen.append])
    backend_of(runner).fail(ErrorKind.DISCONNECT)
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
    backend_of(runner).fail(ErrorKind.DISCONNECT)
    task = runner.run(create_task, "x")
    assert task.name == "x"
    assert len(later) == 1
    failures = [r for r in records(caplog, logging.ERROR) if "hook" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
    assert isinstance(failures[0].exc_info[1], RuntimeError)


@pytest.mark.usefixtures("instant")
def test_hooks_are_kept_by_using() -> None:
    """A runner derived with using() keeps the original's hooks."""
    seen: list[RetryDetails] = []
    runner = make_runner(hooks=[seen.append]).using(idempotent=True)
    backend_of(runner).fail(ErrorKind.DISCONNECT)
    runner.run(create_task, "x")
    assert len(seen) == 1


# --- time budget -----------------------------------------------------------------------------


def test_time_budget_stops_retries(clock: FakeClock) -> None:
    """With a slow failing operation, retries stop once the next wait would pass the timeout."""
    policy = RetryPolicy(attempts=100, timeout=1.0, wait_initial=0.1, wait_max=0.4, wait_jitter=0)
    runner = make_runner(policy)
    runner._clock = clock
    backend = backend_of(runner)
    backend.fail(ErrorKind.UNAVAILABLE, errno=2003, times=100)
    starts: list[float] = []

    def slow(uow: Any) -> None:
        starts.append(clock.now - 1000.0)
        clock.advance(0.05)
        uow.tasks.all()

    with pytest.raises(SimulatedError) as excinfo:
        runner.run(slow)
    details = retry_details(excinfo.value)
    assert details is not None
    assert details.reason == "time budget exhausted"
    assert clock.sleeps == pytest.approx([0.1, 0.2, 0.4])
    assert backend.attempts == 4
    assert all(start < policy.timeout for start in starts)
    elapsed = clock.now - 1000.0
    assert details.elapsed == pytest.approx(elapsed)
    assert elapsed <= policy.timeout + policy.wait_max


def test_time_budget_counts_from_the_first_attempt(clock: FakeClock) -> None:
    """A first attempt slower than the whole budget is not rerun."""
    runner = make_runner(RetryPolicy(timeout=5))
    runner._clock = clock
    backend = backend_of(runner)
    backend.fail(ErrorKind.DISCONNECT)

    def very_slow(uow: Any) -> None:
        clock.advance(6)
        uow.tasks.all()

    with pytest.raises(SimulatedError) as excinfo:
        runner.run(very_slow)
    details = retry_details(excinfo.value)
    assert details is not None
    assert details.reason == "time budget exhausted"
    assert details.attempt == 1
    assert backend.attempts == 1
    assert clock.sleeps == []


def test_attempt_deadline_is_start_plus_timeout(clock: FakeClock) -> None:
    """Every attempt is told the same deadline: the operation's start plus its timeout."""
    runner = make_runner(RetryPolicy(timeout=12))
    runner._clock = clock
    backend_of(runner).fail(ErrorKind.UNAVAILABLE, times=2)
    deadlines: list[float] = []

    def op(uow: Any) -> None:
        deadlines.append(uow._attempt.deadline)
        clock.advance(1)
        uow.tasks.all()

    runner.run(op)
    assert deadlines == [1012.0, 1012.0, 1012.0]


def test_waits_are_the_policy_backoff_with_the_drawn_jitter(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner sleeps exactly the backoff for each retry number and drawn jitter."""
    monkeypatch.setattr(_runner, "_random", type("Fixed", (), {"random": lambda _self: 0.5})())
    policy = RetryPolicy(wait_initial=0.1, wait_max=1, wait_jitter=0.2)
    runner = make_runner(policy)
    runner._clock = clock
    backend_of(runner).fail(ErrorKind.LOCK_WAIT, times=4)
    runner.run(create_task, "x")
    expected = [policy.backoff(ErrorKind.LOCK_WAIT, n, 0.5) for n in range(1, 5)]
    assert clock.sleeps == pytest.approx(expected)
    assert clock.sleeps == pytest.approx([0.2, 0.3, 0.5, 0.9])


def test_using_keeps_the_clock(clock: FakeClock) -> None:
    """A runner derived with using() measures time with the same clock."""
    runner = make_runner()
    runner._clock = clock
    assert runner.using(idempotent=True)._clock is clock


# --- nesting ---------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=["run", "operation", "attempts"])
def test_nested_call_on_the_same_runner_joins_the_outer_unit(
    units: Runner[Any], entry: Callable[[Runner[Any], str], Task]
) -> None:
    """A call inside a running operation gets the same unit of work and commits with it."""
    backend = backend_of(units)
    seen: list[Any] = []

    def outer(uow: Any) -> Task:
        seen.append(uow)
        units.run(seen.append)
        return entry(units, "inner")

    units.run(outer)
    assert seen[0] is seen[1]
    assert backend.attempts == 1
    assert backend.commits == 1
    assert committed_names(units) == ["inner"]


def test_nested_writes_roll_back_with_the_outer_failure(units: Runner[Any]) -> None:
    """A joined call has no commit of its own: when the outer fails, its writes are gone."""

    def outer(_uow: Any) -> None:
        units.run(create_task, "inner")
        raise ValueError("outer fails")

    with pytest.raises(ValueError, match="outer fails"):
        units.run(outer)
    assert committed_names(units) == []


@pytest.mark.usefixtures("instant")
def test_only_the_outermost_operation_retries() -> None:
    """An inner failure reruns the outer operation; attempts total the outer policy, not more."""
    runner = make_runner(RetryPolicy(attempts=3))
    backend = backend_of(runner)
    backend.fail(ErrorKind.DISCONNECT, times=10)
    inner_calls = 0
    outer_calls = 0

    def inner(uow: Any) -> None:
        nonlocal inner_calls
        inner_calls += 1
        uow.tasks.all()

    def outer(_uow: Any) -> None:
        nonlocal outer_calls
        outer_calls += 1
        runner.run(inner)

    with pytest.raises(SimulatedError) as excinfo:
        runner.run(outer)
    assert (outer_calls, inner_calls, backend.attempts) == (3, 3, 3)
    details = retry_details(excinfo.value)
    assert details is not None
    assert details.operation == "test_only_the_outermost_operation_retries.<locals>.outer"
    assert details.attempt == 3


def test_nested_runner_with_other_settings_on_the_same_store_joins(units: Runner[Any]) -> None:
    """A derived runner (using()) on the same backend joins too, instead of retrying alone."""
    backend = backend_of(units)
    backend.fail(ErrorKind.DISCONNECT, statement=1)
    other = units.using(policy=RetryPolicy(attempts=10))

    def outer(_uow: Any) -> Task:
        return other.run(create_task, "x")

    units.run(outer)
    assert backend.attempts == 2
    assert committed_names(units) == ["x"]


def test_nested_call_on_a_different_runner_does_not_retry_itself(units: Runner[Any]) -> None:
    """A different runner's call inside an operation fails through; the outer one reruns."""
    outer_backend = backend_of(units)
    other = make_runner()
    other_backend = backend_of(other)
    other_backend.fail(ErrorKind.DISCONNECT, errno=2013)
    outer_calls = 0

    def outer(uow: Any) -> Task:
        nonlocal outer_calls
        outer_calls += 1
        uow.tasks.add(Task(name="outer"))
        return other.run(create_task, "other")

    units.run(outer)
    assert outer_calls == 2
    assert other_backend.attempts == 2  # one per outer attempt, never two in a row
    assert outer_backend.attempts == 2
    assert committed_names(other) == ["other"]
    assert committed_names(units) == ["outer"]


def test_nested_failure_on_a_different_runner_has_no_details_of_its_own(
    units: Runner[Any],
) -> None:
    """The inner runner neither retries nor marks the error; the outermost one does both."""
    other = make_runner()
    backend_of(other).fail(ErrorKind.DISCONNECT, times=10)
    inner_details: list[RetryDetails | None] = []

    def outer(_uow: Any) -> None:
        try:
            other.run(create_task, "x")
        except SimulatedError as error:
            inner_details.append(retry_details(error))
            raise

    with pytest.raises(SimulatedError) as excinfo:
        units.run(outer)
    assert inner_details == [None] * 5
    details = retry_details(excinfo.value)
    assert details is not None
    assert details.operation.endswith("outer")
    assert details.attempt == 5
    assert backend_of(other).attempts == 5


def test_exhausted_error_is_not_retried_by_an_outer_runner(units: Runner[Any]) -> None:
    """An error another operation already gave up on (it carries details) is not rerun."""
    other = make_runner()
    other_backend = backend_of(other)
    other_backend.fail(ErrorKind.DISCONNECT, times=50)
    outer_calls = 0

    def outer(_uow: Any) -> None:
        nonlocal outer_calls
        outer_calls += 1
        # A fresh context, as in a worker thread: the inner operation is outermost there.
        contextvars.Context().run(other.run, create_task, "x")

    with pytest.raises(SimulatedError):
        units.run(outer)
    assert outer_calls == 1
    assert other_backend.attempts == 5


def test_outer_runner_keeps_the_inner_give_up_details(units: Runner[Any]) -> None:
    """retry_details() of a given-up error still says how its own operation ended."""
    other = make_runner()
    backend_of(other).fail(ErrorKind.DISCONNECT, times=50)

    def outer(_uow: Any) -> None:
        contextvars.Context().run(other.run, create_task, "x")

    with pytest.raises(SimulatedError) as excinfo:
        units.run(outer)
    details = retry_details(excinfo.value)
    assert details is not None
    assert (details.kind, details.attempt, details.reason) == (
        ErrorKind.DISCONNECT,
        5,
        "attempts exhausted",
    )


def test_sequential_operations_are_not_nested(units: Runner[Any]) -> None:
    """After an operation ends, the next call starts its own unit of work and commit."""
    backend = backend_of(units)
    units.run(create_task, "a")
    units.run(create_task, "b")
    assert backend.commits == 2


def test_nesting_state_is_reset_after_a_failure(units: Runner[Any]) -> None:
    """An operation that failed leaves no active unit of work behind for the next call."""
    with pytest.raises(ZeroDivisionError):
        units.run(lambda _uow: 1 / 0)
    backend = backend_of(units)
    units.run(create_task, "after")
    assert backend.attempts == 2
    assert backend.commits == 1


# --- testing switch --------------------------------------------------------------------------


def test_set_testing_caps_attempts() -> None:
    """set_testing(True, attempts=2) makes any policy stop after two attempts."""
    runner = make_runner(RetryPolicy(attempts=10))
    backend = backend_of(runner)
    backend.fail(ErrorKind.DISCONNECT, times=10)
    with set_testing(True, attempts=2), pytest.raises(SimulatedError) as excinfo:
        runner.run(create_task, "x")
    assert backend.attempts == 2
    details = retry_details(excinfo.value)
    assert details is not None
    assert details.max_attempts == 2


def test_attempts_cap_is_ignored_when_testing_is_off(clock: FakeClock) -> None:
    """The cap only applies in testing mode."""
    runner = make_runner(RetryPolicy(attempts=3))
    runner._clock = clock
    backend = backend_of(runner)
    backend.fail(ErrorKind.DISCONNECT, times=10)
    with set_testing(False, attempts=1), pytest.raises(SimulatedError):
        runner.run(create_task, "x")
    assert backend.attempts == 3


def test_set_testing_restores_the_previous_state() -> None:
    """As a context manager set_testing restores what was there before, nested or not."""
    assert is_testing() is False
    with set_testing(True, attempts=3) as state:
        assert state.enabled is True
        assert state.attempts == 3
        with set_testing(False):
            assert is_testing() is False
        assert _config.get_testing() == state
    assert is_testing() is False
    assert _config.get_testing().attempts is None


def test_set_testing_restores_after_an_exception() -> None:
    """An exception leaving the block still restores the previous state, and propagates."""
    with pytest.raises(RuntimeError, match="boom"), set_testing(True, attempts=1):
        raise RuntimeError("boom")
    assert is_testing() is False
    assert _config.get_testing().attempts is None


def test_set_testing_works_without_a_with_block() -> None:
    """Called plainly, set_testing switches for good (the autouse fixture switches back)."""
    set_testing(True)
    assert is_testing() is True


@pytest.mark.parametrize("attempts", [0, -1])
def test_set_testing_rejects_a_useless_cap(attempts: int) -> None:
    """An attempts cap below 1 is an error naming the value."""
    with pytest.raises(ValueError, match=str(attempts)):
        set_testing(True, attempts=attempts)
    assert is_testing() is False


def test_sleep_is_real_only_outside_testing_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner's sleep calls time.sleep normally and does nothing in testing mode."""
    slept: list[float] = []
    monkeypatch.setattr(_config, "time", type("T", (), {"sleep": staticmethod(slept.append)}))
    _config.sleep(0.25)
    with set_testing(True):
        _config.sleep(5)
    assert slept == [0.25]


def test_testing_mode_makes_retries_instant(monkeypatch: pytest.MonkeyPatch) -> None:
    """In testing mode a long backoff never reaches time.sleep."""
    slept: list[float] = []
    monkeypatch.setattr(_config, "time", type("T", (), {"sleep": staticmethod(slept.append)}))
    runner = make_runner(RetryPolicy(wait_initial=30, wait_max=60, timeout=600))
    backend_of(runner).fail(ErrorKind.UNAVAILABLE, times=2)
    with set_testing(True):
        runner.run(create_task, "x")
    assert slept == []
    backend_of(runner).fail(ErrorKind.UNAVAILABLE)
    runner.run(create_task, "y")
    assert len(slept) == 1
    assert slept[0] >= 30


# --- misc --------------------------------------------------------------------------------------


def test_runner_repr_shows_bounds_not_secrets(units: Runner[Any]) -> None:
    """repr(runner) shows the backend and the policy's bounds."""
    text = repr(units)
    assert "attempts=5" in text
    assert "timeout=30.0" in text
    assert "InMemoryBackend" in text


def test_returned_entities_are_independent_of_the_store(units: Runner[Any]) -> None:
    """Changing a returned entity after the operation does not change the stored one."""
    task = units.run(create_task, "x")
    task.name = "changed"
    assert committed_names(units) == ["x"]


def test_remove_deletes_on_commit(units: Runner[Any]) -> None:
    """remove() stages a deletion that the commit makes visible."""
    task = units.run(create_task, "x")
    units.run(lambda uow: uow.tasks.remove(uow.tasks.get(task.id)))
    assert committed_names(units) == []
    assert units.run(lambda uow: uow.tasks.get(task.id)) is None


class RecordingBackend:
    """An in-memory backend whose transactions log what the runner asks of them."""

    def __init__(self) -> None:
        self.inner = backend_of(make_runner())
        self.calls: list[str] = []
        self.flush_errors: list[BaseException] = []

    def begin(self, attempt: AttemptInfo) -> Any:
        transaction = self.inner.begin(attempt)
        calls = self.calls
        flush_errors = self.flush_errors
        calls.append("begin")

        class Recorded:
            unit = transaction.unit
            events = transaction.events

            def flush(self) -> None:
                calls.append("flush")
                if flush_errors:
                    raise flush_errors.pop(0)
                transaction.flush()

            def commit(self) -> None:
                calls.append("commit")
                transaction.commit()

            def rollback(self) -> None:
                calls.append("rollback")
                transaction.rollback()

            def close(self) -> None:
                calls.append("close")
                transaction.close()

            def committed(self, timeout: float) -> bool | None:
                calls.append("committed?")
                return transaction.committed(timeout)

        return Recorded()

    def classify(self, error: BaseException) -> Classification:
        return self.inner.classify(error)


@pytest.mark.usefixtures("instant")
def test_runner_owns_commit_and_rollback() -> None:
    """Success flushes then commits; a failure rolls back; every attempt is closed."""
    backend = RecordingBackend()
    runner: Runner[Any] = Runner(backend)
    runner.run(create_task, "ok")
    assert backend.calls == ["begin", "flush", "commit", "close"]
    backend.calls.clear()
    backend.inner.fail(ErrorKind.DISCONNECT)
    runner.run(create_task, "rerun")
    assert backend.calls == [
        *("begin", "rollback", "close"),
        *("begin", "flush", "commit", "close"),
    ]


@pytest.mark.usefixtures("instant")
def test_failed_commit_is_rolled_back_and_closed_before_resolution() -> None:
    """A lost COMMIT is rolled back and closed first; only then is the outcome looked up."""
    backend = RecordingBackend()
    runner: Runner[Any] = Runner(backend)
    backend.inner.fail(ErrorKind.DISCONNECT, at="commit", committed=True)
    with pytest.raises(CommitOutcomeUnknown):
        runner.run(create_task, "lost")
    assert backend.calls == ["begin", "flush", "commit", "rollback", "close", "committed?"]


@pytest.mark.usefixtures("instant")
def test_failure_at_flush_rolls_back_and_reruns_without_commit() -> None:
    """An error while flushing (before COMMIT) is known to roll back: no commit, a clean rerun."""
    backend = RecordingBackend()
    runner: Runner[Any] = Runner(backend)
    backend.flush_errors.append(SimulatedError(ErrorKind.DEADLOCK, 1213))
    assert runner.run(create_task, "x").name == "x"
    assert backend.calls == [
        *("begin", "flush", "rollback", "close"),
        *("begin", "flush", "commit", "close"),
    ]
    assert backend.inner.commits == 1


@pytest.mark.usefixtures("instant")
def test_permanent_failure_at_flush_is_raised_as_is() -> None:
    """A permanent error at flush (e.g. a duplicate key) is raised unchanged, never committed."""
    backend = RecordingBackend()
    runner: Runner[Any] = Runner(backend)
    error = SimulatedError(ErrorKind.PERMANENT, 1062)
    backend.flush_errors.append(error)
    with pytest.raises(SimulatedError) as excinfo:
        runner.run(create_task, "dup")
    assert excinfo.value is error
    assert "commit" not in backend.calls


def test_unit_of_work_knows_its_attempt(units: Runner[Any]) -> None:
    """uow.attempt tells the operation name, the attempt number and the deadline."""
    backend_of(units).fail(ErrorKind.DISCONNECT)
    seen: list[AttemptInfo] = []

    def op(uow: Any) -> None:
        seen.append(uow.attempt)
        uow.tasks.all()

    units.run(op)
    assert [(a.operation, a.number) for a in seen] == [
        ("test_unit_of_work_knows_its_attempt.<locals>.op", 1),
        ("test_unit_of_work_knows_its_attempt.<locals>.op", 2),
    ]
    assert seen[0].deadline == seen[1].deadline


def test_error_kind_prints_as_its_value() -> None:
    """str(ErrorKind.X) is the value used in logs and settings ('lock_wait')."""
    assert str(ErrorKind.LOCK_WAIT) == "lock_wait"
    assert ErrorKind("deadlock") is ErrorKind.DEADLOCK


def test_swallowed_transient_error_is_not_committed() -> None:
    """An operation catching a deadlock and returning is rolled back and rerun, never committed."""
    runner = make_runner(RetryPolicy(wait_initial=0, wait_jitter=0))
    backend_of(runner).fail(ErrorKind.DEADLOCK, errno=1213, statement=2)
    swallowed: list[int] = []

    def add_two(unit: Any) -> None:
        unit.tasks.add(Task(name="first"))
        try:
            unit.tasks.add(Task(name="second"))
        except SimulatedError as error:
            swallowed.append(error.errno or 0)

    runner.run(add_two)

    assert swallowed == [1213]  # attempt 1 only: attempt 2 saw no error
    assert backend_of(runner).attempts == 2
    assert backend_of(runner).commits == 1
    assert sorted(task.name for task in backend_of(runner).tables["TaskRepository"].values()) == [
        "first",
        "second",
    ]


def test_swallowed_permanent_error_does_not_block_the_commit() -> None:
    """Catching a permanent error is the operation's business: the attempt commits once."""
    runner = make_runner()
    backend_of(runner).fail(ErrorKind.PERMANENT, errno=1062, statement=1)

    def insert_or_ignore(unit: Any) -> None:
        with contextlib.suppress(SimulatedError):
            unit.tasks.add(Task(name="duplicate"))
        unit.tasks.add(Task(name="kept"))

    runner.run(insert_or_ignore)
    assert backend_of(runner).attempts == 1
    assert backend_of(runner).commits == 1
    assert [task.name for task in backend_of(runner).tables["TaskRepository"].values()] == ["kept"]
