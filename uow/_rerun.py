"""The rerun-safety check: an operation rerun after a fault must leave the clean state.

The check is one script (`uow._script`): the sync entry points drive it calling each step,
the async ones awaiting them, so both compare in the same way.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from uow._async_runner import AsyncRunner
from uow._config import set_testing
from uow._errors import CommitOutcomeUnknown
from uow._faults import Fault, Injection, inject
from uow._names import operation_name
from uow._script import run_async, run_sync

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from uow._runner import Runner
    from uow._script import Script

R = TypeVar("R")


Verdict = Literal["safe", "unsafe", "unresolved", "not reached"]


@dataclass(frozen=True, slots=True)
class RerunFinding:
    """What one injected fault did to an operation, compared with its clean run.

    ``verdict``: ``"safe"`` (same state, result and side effects), ``"unsafe"`` (see
    ``differences``), ``"unresolved"`` (a lost COMMIT raised
    [`CommitOutcomeUnknown`][uow.CommitOutcomeUnknown]: the runner refused to guess, which is safe
    but leaves the decision to the caller), ``"not reached"`` (the fault never fired).
    """

    fault: Fault
    verdict: Verdict
    attempts: int
    differences: tuple[str, ...] = ()
    error: BaseException | None = None

    def __str__(self) -> str:
        attempts = f" ({self.attempts} attempt{'s' if self.attempts != 1 else ''})"
        details = f": {'; '.join(self.differences)}" if self.differences else ""
        return f"{self.verdict.upper():<11} {self.fault}{attempts}{details}"


@dataclass(frozen=True, slots=True)
class RerunReport:
    """The findings of `check_rerun_safety` (or its async twin), one per injected fault."""

    operation: str
    statements: int
    """Statements the clean run's attempt sent (the faults went at each of them)."""
    findings: tuple[RerunFinding, ...]

    @property
    def unsafe(self) -> tuple[RerunFinding, ...]:
        """The findings after which state, result or side effects differed."""
        return tuple(f for f in self.findings if f.verdict == "unsafe")

    @property
    def safe(self) -> bool:
        """Whether no injected fault changed the outcome."""
        return not self.unsafe

    def assert_safe(self) -> None:
        """Raise `AssertionError` listing every unsafe point, if there is one."""
        if not self.safe:
            raise AssertionError(str(self))

    def __str__(self) -> str:
        head = (
            f"rerun check of {self.operation}: {self.statements} statement(s) and COMMIT, "
            f"{len(self.findings)} fault(s) injected, "
            + (f"{len(self.unsafe)} UNSAFE" if self.unsafe else "all safe")
        )
        return "\n".join([head, *(f"  {finding}" for finding in self.findings)])


@dataclass(frozen=True, slots=True)
class _Run:
    """One run of the operation: what it returned or raised, and what it left behind."""

    result: object
    error: BaseException | None
    state: object
    side_effects: object
    injection: Injection


def check_rerun_safety(
    runner: Runner[Any],
    operation: Callable[..., R],
    /,
    *args: Any,
    snapshot: Callable[[], object],
    restore: Callable[[], object],
    side_effects: Callable[[], object] | None = None,
    result: Callable[[R], object] | None = None,
    fault: Callable[[int], Fault] = Fault.disconnect,
    at_commit: Sequence[Fault] | None = None,
) -> RerunReport:
    """Run ``operation(uow, *args)`` once cleanly, then once per injected fault, and compare.

    ``restore()`` brings back the starting state (of the database and of whatever
    ``side_effects()`` looks at) and is called before every run and at the end;
    ``snapshot()`` returns the database state to compare (rows that matter, without
    auto-increment ids: a rolled-back INSERT consumes one). The clean run gives the
    reference and the number of statements N; then ``fault(n)`` is injected at each
    statement n of 1..N, and each of ``at_commit`` (by default a lost COMMIT not applied,
    then applied) at the COMMIT, each time on a fresh start with retries instant.
    Results are compared with ``==`` (or as ``result(value)`` projects them); results
    without an ``__eq__`` of their own, such as ORM entities, only through ``result``.
    Use `functools.partial` for keyword arguments of the operation. For an
    [`AsyncRunner`][uow.AsyncRunner], await `check_rerun_safety_async` instead.
    """
    given: object = runner  # typed as a Runner; a caller may still pass the other kind
    if isinstance(given, AsyncRunner):
        msg = (
            "check_rerun_safety() runs a sync Runner; for an AsyncRunner, "
            "`await check_rerun_safety_async(...)` with the same arguments"
        )
        raise TypeError(msg)
    checking = _checking(
        runner,
        operation,
        args,
        snapshot=snapshot,
        restore=restore,
        side_effects=side_effects,
        result=result,
        fault=fault,
        at_commit=at_commit,
    )
    return run_sync(checking)


async def check_rerun_safety_async(
    runner: AsyncRunner[Any],
    operation: Callable[..., Awaitable[R]],
    /,
    *args: Any,
    snapshot: Callable[[], object],
    restore: Callable[[], object],
    side_effects: Callable[[], object] | None = None,
    result: Callable[[R], object] | None = None,
    fault: Callable[[int], Fault] = Fault.disconnect,
    at_commit: Sequence[Fault] | None = None,
) -> RerunReport:
    """Check an ``async def`` operation as `check_rerun_safety` checks a sync one.

    The same runs, faults and comparison, with the operation awaited through an
    [`AsyncRunner`][uow.AsyncRunner]. ``snapshot``, ``restore`` and ``side_effects`` may be
    ``async def`` functions too: what they return is awaited when it is awaitable.
    """
    given: object = runner
    if not isinstance(given, AsyncRunner):
        msg = (
            "check_rerun_safety_async() runs an AsyncRunner; for a sync Runner, call "
            "check_rerun_safety(...) with the same arguments"
        )
        raise TypeError(msg)
    checking = _checking(
        runner,
        operation,
        args,
        snapshot=snapshot,
        restore=restore,
        side_effects=side_effects,
        result=result,
        fault=fault,
        at_commit=at_commit,
    )
    return await run_async(checking)


def assert_rerun_safe(
    runner: Runner[Any],
    operation: Callable[..., R],
    /,
    *args: Any,
    snapshot: Callable[[], object],
    restore: Callable[[], object],
    side_effects: Callable[[], object] | None = None,
    result: Callable[[R], object] | None = None,
    fault: Callable[[int], Fault] = Fault.disconnect,
    at_commit: Sequence[Fault] | None = None,
) -> RerunReport:
    """Run `check_rerun_safety`; raise `AssertionError` listing unsafe points."""
    report = check_rerun_safety(
        runner,
        operation,
        *args,
        snapshot=snapshot,
        restore=restore,
        side_effects=side_effects,
        result=result,
        fault=fault,
        at_commit=at_commit,
    )
    report.assert_safe()
    return report


async def assert_rerun_safe_async(
    runner: AsyncRunner[Any],
    operation: Callable[..., Awaitable[R]],
    /,
    *args: Any,
    snapshot: Callable[[], object],
    restore: Callable[[], object],
    side_effects: Callable[[], object] | None = None,
    result: Callable[[R], object] | None = None,
    fault: Callable[[int], Fault] = Fault.disconnect,
    at_commit: Sequence[Fault] | None = None,
) -> RerunReport:
    """Await `check_rerun_safety_async`; raise `AssertionError` listing unsafe points."""
    report = await check_rerun_safety_async(
        runner,
        operation,
        *args,
        snapshot=snapshot,
        restore=restore,
        side_effects=side_effects,
        result=result,
        fault=fault,
        at_commit=at_commit,
    )
    report.assert_safe()
    return report


def _checking(
    runner: Runner[Any] | AsyncRunner[Any],
    operation: Callable[..., Any],
    args: tuple[Any, ...],
    *,
    snapshot: Callable[[], object],
    restore: Callable[[], object],
    side_effects: Callable[[], object] | None,
    result: Callable[[Any], object] | None,
    fault: Callable[[int], Fault],
    at_commit: Sequence[Fault] | None,
) -> Script[RerunReport]:
    """Return the check as a script: each run of the operation and each callback is a step.

    Driven by `run_sync` for a `Runner`, by `run_async` for an `AsyncRunner` (which
    awaits the operation's run and any awaitable a callback returns).
    """
    name = operation_name(operation)
    commit_faults = (
        (Fault.lost_commit(committed=False), Fault.lost_commit(committed=True))
        if at_commit is None
        else tuple(at_commit)
    )

    def observe(*faults: Fault) -> Script[_Run]:
        yield restore
        with inject(*faults, strict=False) as injection:
            try:
                value: object = yield partial(runner.run, operation, *args)
                error = None
            except Exception as raised:  # noqa: BLE001 -- an outcome to compare, not a failure
                value, error = None, raised
        effects = (yield side_effects) if side_effects is not None else None
        state = yield snapshot
        return _Run(value, error, state, effects, injection)

    with set_testing(True):
        try:
            reference = yield from observe()
            if reference.error is not None:
                msg = f"the clean run of {name} failed; nothing to compare with"
                raise AssertionError(msg) from reference.error
            statements = reference.injection.statements(name)
            reached_commit = any(
                p.operation == name and p.attempt == 1 and p.at == "commit"
                for p in reference.injection.points
            )
            if not statements and not reached_commit:
                msg = (
                    f"the clean run of {name} reached no statement and no COMMIT: it touches "
                    "no database, or its backend does not consult uow.testing.inject"
                )
                raise AssertionError(msg)
            faults = [fault(n) for n in range(1, statements + 1)]
            faults += list(commit_faults) if reached_commit else []
            findings: list[RerunFinding] = []
            for injected in faults:
                run = yield from observe(injected)
                findings.append(_judge(name, injected, reference, run, result))
        finally:
            yield restore
    return RerunReport(name, statements, tuple(findings))


_short = reprlib.Repr()
_short.maxstring = _short.maxother = 120
_short.maxlist = _short.maxtuple = _short.maxdict = _short.maxset = 8


def _judge(
    name: str,
    fault: Fault,
    reference: _Run,
    run: _Run,
    project: Callable[[Any], object] | None,
) -> RerunFinding:
    """Compare a run with a fault injected against the clean run."""
    attempts = run.injection.attempts(name)
    if not run.injection.fired:
        return RerunFinding(fault, "not reached", attempts)
    if isinstance(run.error, CommitOutcomeUnknown):
        return RerunFinding(fault, "unresolved", attempts, error=run.error)
    differences: list[str] = []
    if run.error is not None:
        differences.append(f"raised {type(run.error).__name__}: {run.error}")
    elif not _same_result(reference.result, run.result, project):
        shown = project or (lambda value: value)
        differences.append(
            f"result: expected {_short.repr(shown(reference.result))}, "
            f"got {_short.repr(shown(run.result))}"
        )
    for what, expected, got in (
        ("state", reference.state, run.state),
        ("side effects", reference.side_effects, run.side_effects),
    ):
        if expected != got:
            differences.append(f"{what}: expected {_short.repr(expected)}, got {_short.repr(got)}")
    verdict: Verdict = "unsafe" if differences else "safe"
    return RerunFinding(fault, verdict, attempts, tuple(differences), run.error)


def _same_result(expected: object, got: object, project: Callable[[Any], object] | None) -> bool:
    if project is not None:
        return project(expected) == project(got)
    if type(expected).__eq__ is object.__eq__:
        return True  # identity only (an ORM entity): compare through ``result=``
    return expected == got
