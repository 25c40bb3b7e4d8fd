"""Fault and inject(): faults described once, struck by the in-memory store where they are due."""

from __future__ import annotations

import contextvars
import dataclasses
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from adapters.memory import InMemoryBackend, InMemoryUnitOfWork, SimulatedError
from tests.unit.conftest import Task, TaskRepository
from uow import AttemptInfo, CommitOutcomeUnknown, ErrorKind, RetryPolicy, Runner, retry_details
from uow._faults import current_injection
from uow.testing import (
    Fault,
    InjectionPoint,
    assert_rerun_safe,
    inject,
    is_testing,
    set_testing,
)

if TYPE_CHECKING:
    from collections.abc import Iterator


def consulting_runner(**options: Any) -> Runner[Any]:
    backend = InMemoryBackend({"tasks": TaskRepository})
    return Runner(backend, policy=options.pop("policy", RetryPolicy(attempts=3)), **options)


def store(runner: Runner[Any]) -> InMemoryBackend:
    backend = runner.backend
    assert isinstance(backend, InMemoryBackend)
    return backend


def names(runner: Runner[Any]) -> list[str]:
    return sorted(t.name for t in store(runner).tables.get("TaskRepository", {}).values())


def create(uow: Any, name: str) -> Task:
    """Two statements: a read, then the insert (flushed at the commit)."""
    if any(t.name == name for t in uow.tasks.all()):
        raise ValueError(name)
    task: Task = uow.tasks.add(Task(name=name))
    return task


@pytest.fixture
def units() -> Iterator[Runner[Any]]:
    with set_testing(True):
        yield consulting_runner()


# --- Fault ----------------------------------------------------------------------------------


def test_fault_constructors_describe_mysql_errors() -> None:
    """The constructors set the kind, the usual errno and the point."""
    assert Fault.disconnect(at=2) == Fault(ErrorKind.DISCONNECT, 2013, 2)
    assert Fault.disconnect(errno=2006).errno == 2006
    assert Fault.deadlock(at="commit") == Fault(ErrorKind.DEADLOCK, 1213, "commit")
    assert Fault.lock_wait(at=3, times=2) == Fault(ErrorKind.LOCK_WAIT, 1205, 3, times=2)
    assert Fault.failover().errno == 1290
    lost = Fault.lost_commit(committed=True)
    assert (lost.kind, lost.at, lost.committed) == (ErrorKind.DISCONNECT, "commit", True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"at": 0}, "statement number"),
        ({"at": True}, "statement number"),
        ({"at": "flush"}, "statement number"),
        ({"times": 0}, "times"),
        ({"committed": True}, "committed=True needs at='commit'"),
        ({"kind": ErrorKind.DEADLOCK, "at": "commit", "committed": True}, "server's answer"),
    ],
)
def test_fault_rejects_impossible_descriptions(kwargs: dict[str, Any], message: str) -> None:
    """A fault that cannot happen fails at construction with a message naming the field."""
    with pytest.raises(ValueError, match=message):
        Fault(**{"kind": ErrorKind.DISCONNECT, **kwargs})


def test_fault_is_frozen_and_readable() -> None:
    """Faults are immutable values with a short description."""
    fault = Fault.disconnect(at=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fault.at = 3  # type: ignore[misc]
    assert str(fault) == "disconnect (2013) at statement 2"
    assert str(Fault.deadlock(at="commit", times=2)) == "deadlock (1213) at COMMIT, 2 attempts"
    assert str(Fault.lost_commit(committed=False)) == "lost COMMIT (2013), not applied"
    assert str(Fault(ErrorKind.INTERRUPTED)) == "interrupted at statement 1"
    with pytest.raises(TypeError, match="ErrorKind"):
        Fault("disconnect")  # type: ignore[arg-type]


# --- inject on the in-memory store ------------------------------------------------------------


def test_fault_at_statement_n_reruns_the_operation(units: Runner[Any]) -> None:
    """A disconnect at statement 2 fails attempt 1 there; attempt 2 writes exactly once."""
    with inject(Fault.disconnect(at=2)) as injection:
        task = units.run(create, "a")
    assert task.name == "a"
    assert names(units) == ["a"]
    assert store(units).attempts == 2
    assert injection.fired == (Fault.disconnect(at=2),)
    assert [(p.attempt, p.at) for p in injection.points] == [
        (1, 1),
        (1, 2),
        (2, 1),
        (2, 2),
        (2, "commit"),
    ]
    assert injection.statements("create") == 2
    assert injection.attempts("create") == 2


def test_fault_strikes_as_many_attempts_as_times_then_the_error_comes_back(
    units: Runner[Any],
) -> None:
    """times=3 with 3 attempts allowed exhausts them: the last error is the caller's."""
    with pytest.raises(SimulatedError) as excinfo, inject(Fault.deadlock(at=1, times=3)):
        units.run(create, "a")
    details = retry_details(excinfo.value)
    assert details is not None
    assert (details.attempt, details.kind, details.errno) == (3, ErrorKind.DEADLOCK, 1213)
    assert (details.reason, names(units)) == ("attempts exhausted", [])


def test_lost_commit_applied_is_unknown_by_default_and_written_once(units: Runner[Any]) -> None:
    """A lost COMMIT that was applied raises CommitOutcomeUnknown; the row exists once."""
    with pytest.raises(CommitOutcomeUnknown), inject(Fault.lost_commit(committed=True)):
        units.run(create, "a")
    assert names(units) == ["a"]


def test_lost_commit_not_applied_is_rerun_when_idempotent(units: Runner[Any]) -> None:
    """A lost COMMIT that was not applied, on an idempotent runner, is rerun and commits once."""
    with inject(Fault.lost_commit(committed=False)):
        units.using(idempotent=True).run(create, "a")
    assert names(units) == ["a"]
    assert store(units).commits == 1


def test_deadlock_at_commit_is_rerun(units: Runner[Any]) -> None:
    """A deadlock at COMMIT is the server's answer (not committed): the operation reruns."""
    with inject(Fault.deadlock(at="commit")) as injection:
        units.run(create, "a")
    assert names(units) == ["a"]
    assert injection.attempts("create") == 2


def test_strict_injection_fails_when_a_fault_never_fired(units: Runner[Any]) -> None:
    """Leaving an inject block with an unfired fault raises, naming it and the points reached."""
    unfired = r"never fired: disconnect \(2013\) at statement 5; points reached: \[1, 2, 'commit'\]"
    with (
        pytest.raises(AssertionError, match=unfired),
        inject(Fault.disconnect(at=5), Fault.disconnect(at=1)),
    ):
        units.run(create, "a")
    with inject(Fault.disconnect(at=5), strict=False) as injection:
        units.run(create, "b")
    assert injection.pending == (Fault.disconnect(at=5),)


def test_an_error_leaving_the_block_skips_the_strict_check_and_ends_the_injection() -> None:
    """The block's own exception comes back unchanged, and the faults are off afterwards."""
    seen: list[bool] = []
    with pytest.raises(KeyError, match="mine"), inject(Fault.disconnect(at=1)):  # noqa: PT012 -- the block is the subject
        seen.append(current_injection() is not None)
        raise KeyError("mine")
    assert seen == [True]
    assert current_injection() is None


def test_injection_is_scoped_to_its_context(units: Runner[Any]) -> None:
    """An inner block replaces the outer faults until it ends; other threads see none."""
    attempt = AttemptInfo("op", 1, 0.0)
    seen_in_thread: list[bool] = []

    def fault_at_1() -> Fault | None:
        return AttemptInfo("op", 1, 0.0, faults=current_injection()).fault_at(1)

    with inject(Fault.disconnect(at=1), strict=False) as outer:
        with inject(Fault.deadlock(at=1)):
            assert fault_at_1() == Fault.deadlock(at=1)
        thread = threading.Thread(target=lambda: seen_in_thread.append(current_injection() is None))
        thread.start()
        thread.join()
        assert contextvars.Context().run(current_injection) is None
        assert fault_at_1() == Fault.disconnect(at=1)
        assert fault_at_1() is None  # times=1: spent
    assert seen_in_thread == [True]
    assert outer.points == (InjectionPoint("op", 1, 1), InjectionPoint("op", 1, 1))
    assert attempt.fault_at(1) is None  # an attempt without an injection meets no fault
    units.run(create, "untouched")


def test_inject_takes_only_faults() -> None:
    """Passing something else than a Fault is a TypeError at once."""
    with pytest.raises(TypeError, match="Fault objects"), inject(ErrorKind.DISCONNECT):  # type: ignore[arg-type]
        pass


def test_in_memory_adapter_honours_inject() -> None:
    """InMemoryUnitOfWork raises the faults of uow.testing.inject, like the SQLAlchemy adapter."""
    runner = InMemoryUnitOfWork.factory(repositories={"tasks": TaskRepository})
    with set_testing(True), inject(Fault.disconnect(at=1)):
        runner.run(create, "a")
    assert store(runner).attempts == 2


def test_injected_error_is_the_kind_and_errno_of_the_fault(units: Runner[Any]) -> None:
    """The in-memory store raises SimulatedError carrying the fault's kind and errno."""
    caught: list[SimulatedError] = []

    def op(uow: Any) -> None:
        try:
            uow.tasks.all()
        except SimulatedError as error:
            caught.append(error)
            raise

    with inject(Fault.failover(at=1, errno=1836)):
        units.run(op)
    (error,) = caught
    assert (error.kind, error.errno) == (ErrorKind.FAILOVER, 1836)
    assert str(error) == "simulated failover failure (1836)"


def test_testing_module_no_longer_offers_the_old_helpers() -> None:
    """inject() is the one way to arm faults: the old lookup helpers are gone."""
    import uow.testing  # noqa: PLC0415 -- the module object itself is the subject

    assert not hasattr(uow.testing, "injected_fault")
    assert not hasattr(uow.testing, "injecting")
    assert not hasattr(InMemoryBackend(), "fail")


# --- the pytest plugin's fixtures (loaded through the package's entry point) ------------------


@pytest.mark.usefixtures("uow_instant_retries")
def test_plugin_fixtures_inject_until_the_test_ends(uow_inject: Any) -> None:
    """uow_inject arms faults for the rest of the test; uow_instant_retries made retries instant."""
    assert is_testing()
    runner = consulting_runner()
    injection = uow_inject(Fault.disconnect(at=1))
    runner.run(create, "a")
    runner.run(create, "b")
    assert injection.fired == (Fault.disconnect(at=1),)
    assert injection.attempts("create") == 2
    assert current_injection() is injection


def test_plugin_rerun_check_is_assert_rerun_safe(uow_rerun_check: Any) -> None:
    """uow_rerun_check is the assertion helper itself."""
    assert uow_rerun_check is assert_rerun_safe


# --- events under faults --------------------------------------------------------------------


@dataclass(frozen=True)
class Created:
    name: str


def create_with_event(uow: Any, name: str) -> Task:
    """Idempotent: a rerun after an applied lost COMMIT finds the task and records again."""
    found = next((t for t in uow.tasks.all() if t.name == name), None)
    task: Task = found or uow.tasks.add(Task(name))
    uow.record_event(Created(name))
    return task


@pytest.mark.parametrize(
    "fault",
    [
        Fault.disconnect(at=1),
        Fault.disconnect(at=2),
        Fault.deadlock(at="commit"),
        Fault.lost_commit(committed=False),
        Fault.lost_commit(committed=True),
    ],
    ids=str,
)
def test_events_are_published_once_whatever_attempt_failed(fault: Fault) -> None:
    """Only the committed attempt's events are published, once, after its commit."""
    published: list[tuple[Created, int]] = []
    runner: Runner[Any] = consulting_runner()
    runner = consulting_runner(
        event_handlers={Created: [lambda e: published.append((e, store(runner).commits))]}
    ).using(idempotent=True)
    with set_testing(True), inject(fault):
        runner.run(create_with_event, "a")
    assert [event for event, _ in published] == [Created("a")]
    assert published[0][1] == store(runner).commits >= 1


def test_no_event_when_every_attempt_fails_under_injection() -> None:
    """An operation whose every attempt fails publishes no event at all."""
    published: list[object] = []
    runner = consulting_runner(event_handlers={Created: [published.append]})
    with set_testing(True), pytest.raises(SimulatedError), inject(Fault.disconnect(at=2, times=3)):
        runner.run(create_with_event, "a")
    assert published == []
