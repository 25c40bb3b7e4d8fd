"""check_rerun_safety(): a fault at every point, each run compared with the clean one."""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Any

import pytest

from adapters.memory import InMemoryBackend
from tests.unit.conftest import Task, TaskRepository
from uow import AttemptInfo, Classification, ErrorKind, RetryPolicy, Runner
from uow.testing import (
    Fault,
    RerunFinding,
    RerunReport,
    assert_rerun_safe,
    check_rerun_safety,
    is_testing,
)


def names_in(backend: InMemoryBackend) -> list[str]:
    return sorted(t.name for t in backend.tables.get("TaskRepository", {}).values())


def create(uow: Any, name: str) -> Task:
    """Two statements: a read, then the insert (flushed at the commit)."""
    if any(t.name == name for t in uow.tasks.all()):
        raise ValueError(name)
    task: Task = uow.tasks.add(Task(name=name))
    return task


@dataclass
class World:
    """The runner and what a test restores before every run: the store and the outbox."""

    runner: Runner[Any]
    outbox: list[str]
    restores: int = 0

    @property
    def backend(self) -> InMemoryBackend:
        backend = self.runner.backend
        assert isinstance(backend, InMemoryBackend)
        return backend

    def restore(self) -> None:
        self.restores += 1
        self.backend.tables = {}
        self.backend._ids = itertools.count(1)  # as a re-created table would
        self.outbox.clear()

    def snapshot(self) -> list[str]:
        return names_in(self.backend)

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
    runner: Runner[Any] = Runner(
        InMemoryBackend({"tasks": TaskRepository}), policy=RetryPolicy(attempts=3)
    )
    return World(runner, [])


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


def test_a_read_only_operation_is_safe_at_commit_too(world: World) -> None:
    """An operation that only reads is rerun after a lost COMMIT: safe, not unresolved."""

    def count(uow: Any) -> int:
        return len(uow.tasks.all())

    report = world.check(count)
    assert [(str(f.fault), f.verdict) for f in report.findings] == [
        ("disconnect (2013) at statement 1", "safe"),
        ("lost COMMIT (2013), not applied", "safe"),
        ("lost COMMIT (2013), applied", "safe"),
    ]


def test_mail_sent_inside_the_unit_of_work_is_flagged(world: World) -> None:
    """An operation appending to an external list (an email) inside the unit of work is unsafe."""

    def create_and_mail(uow: Any, name: str) -> Task:
        uow.tasks.all()
        world.outbox.append(f"created {name}")  # sent before the commit, sent again on rerun
        task: Task = uow.tasks.add(Task(name=name))
        return task

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
    assert str(report.unsafe[0].fault) == "disconnect (2013) at statement 2"
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


class Silent:
    """A backend (and its transaction) that never consults uow.testing.inject."""

    unit = None
    events = ()
    errors = ()
    wrote = False

    @property
    def database(self) -> object:
        return self

    def begin(self, _attempt: AttemptInfo) -> Silent:
        return self

    def join(self, _transaction: object) -> None:
        return None

    def classify(self, _error: BaseException) -> Classification:
        return Classification(ErrorKind.PERMANENT)

    def prepare(self) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def close(self) -> None: ...
    def committed(self, timeout: float) -> None: ...


def test_a_failing_clean_run_or_a_silent_backend_cannot_be_checked(world: World) -> None:
    """No reference (the clean run raised) or no injection point reached: AssertionError."""

    def broken(_uow: Any) -> None:
        raise ValueError("bug")

    with pytest.raises(AssertionError, match=r"clean run of .*broken failed"):
        world.check(broken)
    with pytest.raises(AssertionError, match=r"does not consult uow\.testing\.inject"):
        check_rerun_safety(Runner(Silent()), lambda _uow: None, snapshot=list, restore=list)
