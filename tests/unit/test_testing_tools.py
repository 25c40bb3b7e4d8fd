"""uow.testing: the instant-retry switch, Fault and inject(), and the rerun-safety check.

The core semantics are tested on the in-memory store, which honours ``inject`` before
its own fault queue (``fail``).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from adapters.memory import InMemoryBackend, InMemoryUnitOfWork, SimulatedError
from tests.unit.conftest import Task, TaskRepository
from uow import (
    AttemptInfo,
    Classification,
    CommitOutcomeUnknown,
    ErrorKind,
    RetryPolicy,
    Runner,
    retry_details,
)
from uow import _config as config
from uow.testing import (
    Fault,
    InjectionPoint,
    RerunFinding,
    RerunReport,
    TestingState,
    assert_rerun_safe,
    check_rerun_safety,
    inject,
    injected_fault,
    injecting,
    is_testing,
    set_testing,
)

if TYPE_CHECKING:
    from collections.abc import Iterator


def consulting_runner(**kwargs: Any) -> Runner[Any]:
    backend = InMemoryBackend({"tasks": TaskRepository})
    return Runner(backend, policy=kwargs.pop("policy", RetryPolicy(attempts=3)), **kwargs)


def store(runner: Runner[Any]) -> InMemoryBackend:
    backend = runner.backend
    assert isinstance(backend, InMemoryBackend)
    return backend


def names(runner: Runner[Any]) -> list[str]:
    return sorted(t.name for t in store(runner).tables.get("TaskRepository", {}).values())


def create(uow: Any, name: str) -> Task:
    """Two statements: a read, then the insert."""
    if any(t.name == name for t in uow.tasks.all()):
        raise ValueError(name)
    return uow.tasks.add(Task(name=name))


@pytest.fixture
def units() -> Iterator[Runner[Any]]:
    with set_testing(True):
        yield consulting_runner()


# --- set_testing --------------------------------------------------------------------------


def test_switch_restores_the_outer_state_after_an_exception_in_a_nested_block() -> None:
    """An exception leaving a nested set_testing block brings back the outer state exactly."""
    with set_testing(True, attempts=2):
        with pytest.raises(KeyError), set_testing(False, attempts=5):
            raise KeyError("x")
        assert config.get_testing() == TestingState(enabled=True, attempts=2)
    assert config.get_testing() == TestingState()


def test_switch_makes_the_runner_never_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """In testing mode the backoff before each retry is skipped, whatever the policy says."""
    slept: list[float] = []
    monkeypatch.setattr(config, "time", type("T", (), {"sleep": staticmethod(slept.append)}))
    runner = consulting_runner(policy=RetryPolicy(attempts=3, wait_initial=5, wait_max=5))
    with set_testing(True), inject(Fault.disconnect(at=1, times=2)):
        runner.run(create, "a")
    assert slept == []
    with set_testing(False), inject(Fault.disconnect(at=1)):
        runner.run(create, "b")
    assert len(slept) == 1


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
    unfired = r"never fired: disconnect \(2013\) at statement 5"
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
        seen.append(injecting())
        raise KeyError("mine")
    assert seen == [True]
    assert not injecting()


def test_injection_is_scoped_to_its_context(units: Runner[Any]) -> None:
    """An inner block replaces the outer faults until it ends; other threads see none."""
    attempt = AttemptInfo("op", 1, 0.0)
    seen_in_thread: list[bool] = []
    with inject(Fault.disconnect(at=1), strict=False) as outer:
        with inject(Fault.deadlock(at=1)):
            assert injected_fault(attempt, 1) == Fault.deadlock(at=1)
        thread = threading.Thread(target=lambda: seen_in_thread.append(injecting()))
        thread.start()
        thread.join()
        assert injected_fault(attempt, 1) == Fault.disconnect(at=1)
        assert injected_fault(attempt, 1) is None  # times=1: spent
    assert seen_in_thread == [False]
    assert outer.points == (InjectionPoint("op", 1, 1), InjectionPoint("op", 1, 1))
    assert injected_fault(attempt, 1) is None
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
    assert injecting()


def test_plugin_rerun_check_is_assert_rerun_safe(uow_rerun_check: Any) -> None:
    """uow_rerun_check is the assertion helper itself."""
    assert uow_rerun_check is assert_rerun_safe


# --- events under faults --------------------------------------------------------------------


@dataclass(frozen=True)
class Created:
    name: str


def create_with_event(uow: Any, name: str) -> Task:
    """Idempotent: a rerun after an applied lost COMMIT finds the task and records again."""
    task = next((t for t in uow.tasks.all() if t.name == name), None) or uow.tasks.add(Task(name))
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


# --- the rerun-safety check -----------------------------------------------------------------


@dataclass
class World:
    """The runner and what a test restores before every run: the store and the outbox."""

    runner: Runner[Any]
    outbox: list[str]
    restores: int = 0

    def restore(self) -> None:
        self.restores += 1
        store(self.runner).tables = {}
        store(self.runner)._ids = itertools.count(1)  # as a re-created table would
        self.outbox.clear()

    def snapshot(self) -> list[str]:
        return names(self.runner)

    def check(self, operation: Any, *args: Any, **kwargs: Any) -> RerunReport:
        return check_rerun_safety(
            self.runner,
            operation,
            *args,
            snapshot=self.snapshot,
            restore=self.restore,
            side_effects=lambda: list(self.outbox),
            **kwargs,
        )


@pytest.fixture
def world() -> World:
    return World(consulting_runner(), [])


def test_a_safe_operation_passes_at_every_point(world: World) -> None:
    """Faults at each statement and both lost COMMITs change nothing a caller can see."""
    report = world.check(create, "a", result=lambda task: task.name)
    assert report.safe
    assert report.statements == 2
    assert [f.fault for f in report.findings] == [
        Fault.disconnect(at=1),
        Fault.disconnect(at=2),
        Fault.lost_commit(committed=False),
        Fault.lost_commit(committed=True),
    ]
    verdicts = [(f.verdict, f.attempts) for f in report.findings]
    assert verdicts == [("safe", 2), ("safe", 2), ("unresolved", 1), ("unresolved", 1)]
    assert world.restores == 1 + 4 + 1  # before each run, and the starting state at the end
    assert world.snapshot() == []
    assert not is_testing()  # the check's instant retries were its own


def test_mail_sent_inside_the_unit_of_work_is_flagged(world: World) -> None:
    """An operation appending to an external list (an email) inside the unit of work is unsafe."""

    def create_and_mail(uow: Any, name: str) -> Task:
        uow.tasks.all()
        world.outbox.append(f"created {name}")  # sent before the commit, sent again on rerun
        return uow.tasks.add(Task(name=name))

    report = world.check(create_and_mail, "a")
    assert [str(f.fault) for f in report.unsafe] == ["disconnect (2013) at statement 2"]
    (finding,) = report.unsafe
    assert finding.differences == (
        "side effects: expected ['created a'], got ['created a', 'created a']",
    )
    listed = r"1 UNSAFE\n.*\n  UNSAFE      disconnect \(2013\) at statement 2 \(2 attempts\): side"
    with pytest.raises(AssertionError, match=listed):
        report.assert_safe()


def test_a_counter_read_outside_the_transaction_is_flagged(world: World) -> None:
    """A number taken from process state on every attempt writes a different row on rerun."""
    numbers = itertools.count(1)

    def create_invoice(uow: Any) -> str:
        name = f"invoice-{next(numbers)}"
        uow.tasks.all()
        uow.tasks.add(Task(name=name))
        return name

    def fresh_counter() -> None:
        nonlocal numbers
        world.restore()
        numbers = itertools.count(1)

    report = check_rerun_safety(
        world.runner, create_invoice, snapshot=world.snapshot, restore=fresh_counter
    )
    unsafe = {str(f.fault): f.differences for f in report.unsafe}
    assert unsafe == {
        f"disconnect (2013) at statement {n}": (
            "result: expected 'invoice-1', got 'invoice-2'",
            "state: expected ['invoice-1'], got ['invoice-2']",
        )
        for n in (1, 2)
    }


def test_idempotent_runner_with_a_non_idempotent_operation_is_flagged(world: World) -> None:
    """Declared idempotent, an insert rerun after an applied lost COMMIT writes twice."""

    def add(uow: Any, name: str) -> None:
        uow.tasks.add(Task(name=name))

    world.runner = world.runner.using(idempotent=True)
    report = world.check(add, "a")
    assert [str(f.fault) for f in report.unsafe] == ["lost COMMIT (2013), applied"]
    assert report.unsafe[0].differences == ("state: expected ['a'], got ['a', 'a']",)


def test_an_error_after_a_fault_is_a_difference(world: World) -> None:
    """A rerun that ends in an error (the first attempt's write seen) is reported as such."""
    done: list[str] = []

    def once(uow: Any) -> None:
        if done:
            raise LookupError("already done")
        uow.tasks.all()
        done.append("x")
        uow.tasks.all()

    def restore() -> None:
        world.restore()
        done.clear()

    report = check_rerun_safety(world.runner, once, snapshot=world.snapshot, restore=restore)
    assert report.unsafe[0].differences == ("raised LookupError: already done",)
    assert isinstance(report.unsafe[0].error, LookupError)


def test_results_are_compared_by_equality_or_projection(world: World) -> None:
    """Values compare with ==, objects without __eq__ (entities) only through result=."""
    serial = itertools.count()

    class Stamp:
        def __init__(self, number: int) -> None:
            self.number = number

    def stamped(uow: Any) -> Stamp:
        uow.tasks.all()
        return Stamp(next(serial))

    def numbered(uow: Any) -> int:
        uow.tasks.all()
        return next(serial)

    assert world.check(stamped).safe
    assert not world.check(stamped, result=lambda stamp: stamp.number).safe
    assert not world.check(numbered).safe
    assert world.check(functools.partial(create, name="p"), result=lambda t: t.name).safe


def test_report_reads_well() -> None:
    """The report lists every point with its verdict; a finding says what differed."""
    report = RerunReport(
        "op",
        1,
        (
            RerunFinding(Fault.disconnect(at=1), "unsafe", 2, ("state: expected 1, got 2",)),
            RerunFinding(Fault.lost_commit(committed=True), "not reached", 1),
        ),
    )
    assert str(report) == (
        "rerun check of op: 1 statement(s) and COMMIT, 2 fault(s) injected, 1 UNSAFE\n"
        "  UNSAFE      disconnect (2013) at statement 1 (2 attempts): state: expected 1, got 2\n"
        "  NOT REACHED lost COMMIT (2013), applied (1 attempt)"
    )


def test_assert_rerun_safe_raises_or_returns_the_report(world: World) -> None:
    """assert_rerun_safe returns the report of a safe operation and raises for an unsafe one."""
    report = assert_rerun_safe(
        world.runner, create, "a", snapshot=world.snapshot, restore=world.restore
    )
    assert report.safe

    def shout(uow: Any) -> None:
        uow.tasks.all()
        world.outbox.append("!")

    with pytest.raises(AssertionError, match="UNSAFE"):
        assert_rerun_safe(
            world.runner,
            shout,
            snapshot=world.snapshot,
            restore=world.restore,
            side_effects=lambda: list(world.outbox),
            at_commit=[Fault.deadlock(at="commit")],
        )


def test_a_failing_clean_run_or_a_silent_backend_cannot_be_checked(world: World) -> None:
    """No reference (the clean run raised) or no injection point reached: AssertionError."""

    def broken(_uow: Any) -> None:
        raise ValueError("bug")

    with pytest.raises(AssertionError, match=r"clean run of .*broken failed"):
        world.check(broken)

    class Silent:
        """A backend that never consults uow.testing.inject."""

        unit = None
        events = ()

        def begin(self, _attempt: AttemptInfo) -> Silent:
            return self

        def classify(self, _error: BaseException) -> Classification:
            return Classification(ErrorKind.PERMANENT)

        def flush(self) -> None: ...
        def commit(self) -> None: ...
        def rollback(self) -> None: ...
        def close(self) -> None: ...
        def committed(self, timeout: float) -> None: ...

    with pytest.raises(AssertionError, match=r"does not consult uow\.testing\.inject"):
        check_rerun_safety(Runner(Silent()), lambda _uow: None, snapshot=list, restore=list)
