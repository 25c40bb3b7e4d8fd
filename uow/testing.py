"""Helpers for the tests of applications built on retrying-uow.

``set_testing()`` makes retries instant (no backoff sleeps) and can cap attempts, so
a test suite never waits on a retry policy meant for production::

    from uow.testing import set_testing

    set_testing(True, attempts=2)          # for the whole session (e.g. in conftest.py)

    with set_testing(True, attempts=1):    # or for one block; the previous state returns
        ...

``inject()`` makes the backends fail at chosen points of an attempt (a lost connection
at statement 2, a deadlock, a lost COMMIT), described by :class:`Fault` whatever the
database; ``check_rerun_safety()`` injects a fault at every point of an operation in
turn and reports where a rerun leaves something different from a clean run::

    with inject(Fault.disconnect(at=2)) as injection:
        units.run(create_placeholder, "t1")           # attempt 1 fails, attempt 2 commits
    assert injection.fired == (Fault.disconnect(at=2),)
"""

from __future__ import annotations

import reprlib
import threading
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from uow._config import TestingState, get_testing, replace_testing
from uow._errors import CommitOutcomeUnknown
from uow._kinds import ErrorKind, commit_outcome_unknown

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from types import TracebackType

    from uow._protocols import AttemptInfo
    from uow._runner import Runner

__all__ = [
    "Fault",
    "Injection",
    "InjectionPoint",
    "Point",
    "RerunFinding",
    "RerunReport",
    "TestingState",
    "assert_rerun_safe",
    "check_rerun_safety",
    "inject",
    "injected_fault",
    "injecting",
    "is_testing",
    "set_testing",
]

R = TypeVar("R")
# Imported into a test module, a class named Test* would be collected (and warned about).
TestingState.__test__ = False  # type: ignore[attr-defined]
Point = int | Literal["commit"]
"""Where a fault strikes in an attempt: the N-th statement (from 1) or its COMMIT."""


class _TestingSwitch:
    """Returned by :func:`set_testing`; as a context manager it restores the previous state."""

    def __init__(self, previous: TestingState) -> None:
        self._previous = previous

    def __enter__(self) -> TestingState:
        return get_testing()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        replace_testing(self._previous)


def set_testing(enabled: bool = True, *, attempts: int | None = None) -> _TestingSwitch:  # noqa: FBT001, FBT002 -- mirrors stamina.set_testing(True)
    """Turn testing mode on or off: no sleeping between attempts, at most ``attempts``."""
    if attempts is not None and attempts < 1:
        msg = f"attempts must be at least 1 or None, got {attempts!r}"
        raise ValueError(msg)
    return _TestingSwitch(replace_testing(TestingState(enabled=enabled, attempts=attempts)))


def is_testing() -> bool:
    """Return whether testing mode is on."""
    return get_testing().enabled


@dataclass(frozen=True, slots=True)
class Fault:
    """A transient failure to simulate at one point of an attempt, whatever the database.

    ``at`` is the number of the statement (from 1, counted per attempt) or ``"commit"``;
    ``committed`` says whether a COMMIT whose reply was lost had been applied (only for
    kinds that leave the outcome unknown: a lost connection, a failover); ``times`` is
    the number of attempts it strikes. ``errno`` ``None`` lets the adapter pick the usual
    one for the kind. Each adapter raises what its driver would (see ``adapters.faults``).
    """

    kind: ErrorKind
    errno: int | None = None
    at: Point = 1
    committed: bool = False
    times: int = 1

    def __post_init__(self) -> None:
        kind: object = self.kind  # checked at run time too: tests build faults untyped
        if not isinstance(kind, ErrorKind):
            msg = f"kind must be an ErrorKind, not {kind!r}"
            raise TypeError(msg)
        at: object = self.at
        if at != "commit" and (not isinstance(at, int) or isinstance(at, bool) or at < 1):
            msg = f'at must be a statement number (from 1) or "commit", not {at!r}'
            raise ValueError(msg)
        if self.times < 1:
            msg = f"times must be at least 1, not {self.times!r}"
            raise ValueError(msg)
        if self.committed and (at != "commit" or not commit_outcome_unknown(self.kind)):
            msg = (
                "committed=True needs at='commit' and a kind that leaves the outcome unknown "
                f"(disconnect, failover, interrupted); a {self.kind.value} is the server's "
                "answer, so the transaction did not commit"
            )
            raise ValueError(msg)

    @classmethod
    def disconnect(cls, at: Point = 1, *, errno: int = 2013, times: int = 1) -> Fault:
        """Lose the connection (2013; 2006 for an idle one) at statement ``at`` or at COMMIT."""
        return cls(ErrorKind.DISCONNECT, errno, at, times=times)

    @classmethod
    def deadlock(cls, at: Point = 1, *, times: int = 1) -> Fault:
        """Break a deadlock (1213) by rolling the transaction back, as the server does."""
        return cls(ErrorKind.DEADLOCK, 1213, at, times=times)

    @classmethod
    def lock_wait(cls, at: Point = 1, *, times: int = 1) -> Fault:
        """Time a lock wait out (1205)."""
        return cls(ErrorKind.LOCK_WAIT, 1205, at, times=times)

    @classmethod
    def failover(cls, at: Point = 1, *, errno: int = 1290, times: int = 1) -> Fault:
        """Refuse the write as a read-only or non-primary server does (1290 ``--read-only``)."""
        return cls(ErrorKind.FAILOVER, errno, at, times=times)

    @classmethod
    def lost_commit(cls, *, committed: bool, errno: int = 2013, times: int = 1) -> Fault:
        """Lose the connection while COMMIT is in flight; ``committed``: it was applied."""
        return cls(ErrorKind.DISCONNECT, errno, "commit", committed=committed, times=times)

    def __str__(self) -> str:
        errno = "" if self.errno is None else f" ({self.errno})"
        times = "" if self.times == 1 else f", {self.times} attempts"
        if self.at != "commit":
            return f"{self.kind.value}{errno} at statement {self.at}{times}"
        if commit_outcome_unknown(self.kind):
            applied = "applied" if self.committed else "not applied"
            return f"lost COMMIT{errno}, {applied}{times}"
        return f"{self.kind.value}{errno} at COMMIT{times}"


@dataclass(frozen=True, slots=True)
class InjectionPoint:
    """A point a backend reached while faults were injected (whether one fired or not)."""

    operation: str
    attempt: int
    at: Point


class Injection:
    """The faults of one :func:`inject` block and what the backends met while it was on."""

    def __init__(self, faults: Sequence[Fault]) -> None:
        """Arm ``faults``; each strikes the first ``times`` attempts that reach its point."""
        self.faults = tuple(faults)
        self._remaining = [fault.times for fault in self.faults]
        self._fired: list[Fault] = []
        self._points: list[InjectionPoint] = []
        self._lock = threading.Lock()  # asyncio tasks copy the context, not the object

    @property
    def fired(self) -> tuple[Fault, ...]:
        """The faults raised so far, in order (a fault striking twice appears twice)."""
        return tuple(self._fired)

    @property
    def points(self) -> tuple[InjectionPoint, ...]:
        """Every statement and COMMIT the backends reached, in order."""
        return tuple(self._points)

    @property
    def pending(self) -> tuple[Fault, ...]:
        """The faults that never fired."""
        remaining = zip(self.faults, self._remaining, strict=True)
        return tuple(fault for fault, left in remaining if left == fault.times)

    def statements(self, operation: str, attempt: int = 1) -> int:
        """Return how many statements one attempt of an operation ran."""
        return sum(
            1
            for p in self._points
            if p.operation == operation and p.attempt == attempt and p.at != "commit"
        )

    def attempts(self, operation: str) -> int:
        """Return how many attempts of an operation reached a statement or COMMIT."""
        return max((p.attempt for p in self._points if p.operation == operation), default=0)

    def take(self, attempt: AttemptInfo, at: Point) -> Fault | None:
        """Note that ``attempt`` reached ``at``; return the fault due there, if any."""
        with self._lock:
            self._points.append(InjectionPoint(attempt.operation, attempt.number, at))
            for index, fault in enumerate(self.faults):
                if fault.at == at and self._remaining[index] > 0:
                    self._remaining[index] -= 1
                    self._fired.append(fault)
                    return fault
        return None

    def __repr__(self) -> str:
        return f"<Injection faults={list(map(str, self.faults))} fired={len(self._fired)}>"


_injection: ContextVar[Injection | None] = ContextVar("retrying_uow_injection", default=None)


@contextmanager
def inject(*faults: Fault, strict: bool = True) -> Iterator[Injection]:
    """Make the backends raise ``faults`` in the operations run inside the block.

    Scoped to the current context (thread or asyncio task); an inner block replaces the
    outer one's faults until it ends. With ``strict`` (the default), leaving the block
    normally while a fault never fired raises :class:`AssertionError`: a fault that did
    not strike proves nothing. Backends consult it through :func:`injected_fault`.
    """
    for given in faults:
        checked: object = given
        if not isinstance(checked, Fault):
            msg = f"inject() takes Fault objects, not {checked!r}"
            raise TypeError(msg)
    injection = Injection(faults)
    token = _injection.set(injection)
    try:
        yield injection
    finally:
        _injection.reset(token)
    if strict and injection.pending:
        reached = sorted(
            {p.at for p in injection.points}, key=lambda at: (at == "commit", str(at).zfill(9))
        )
        msg = (
            f"injected faults never fired: {', '.join(map(str, injection.pending))}; "
            f"points reached: {reached or 'none'} (is the statement number right, and does "
            "the backend consult uow.testing.inject?)"
        )
        raise AssertionError(msg)


def injecting() -> bool:
    """Tell adapters whether an :func:`inject` block is active in this context."""
    return _injection.get() is not None


def injected_fault(attempt: AttemptInfo, at: Point) -> Fault | None:
    """For adapters: note that ``attempt`` reached ``at`` and return the fault due there."""
    injection = _injection.get()
    return None if injection is None else injection.take(attempt, at)


Verdict = Literal["safe", "unsafe", "unresolved", "not reached"]


@dataclass(frozen=True, slots=True)
class RerunFinding:
    """What one injected fault did to an operation, compared with its clean run.

    ``verdict``: ``"safe"`` (same state, result and side effects), ``"unsafe"`` (see
    ``differences``), ``"unresolved"`` (a lost COMMIT raised
    :class:`~uow.CommitOutcomeUnknown`: the runner refused to guess, which is safe but
    leaves the decision to the caller), ``"not reached"`` (the fault never fired).
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
    """The findings of :func:`check_rerun_safety`, one per injected fault."""

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
        """Raise :class:`AssertionError` listing every unsafe point, if there is one."""
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
    Use :func:`functools.partial` for keyword arguments of the operation.
    """
    name = getattr(operation, "__qualname__", None) or repr(operation)
    commit_faults = (
        (Fault.lost_commit(committed=False), Fault.lost_commit(committed=True))
        if at_commit is None
        else tuple(at_commit)
    )

    def observe(*faults: Fault) -> _Run:
        restore()
        with inject(*faults, strict=False) as injection:
            try:
                value: object = runner.run(operation, *args)
                error = None
            except Exception as raised:  # noqa: BLE001 -- an outcome to compare, not a failure
                value, error = None, raised
        effects = side_effects() if side_effects is not None else None
        return _Run(value, error, snapshot(), effects, injection)

    with set_testing(True):
        try:
            reference = observe()
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
            findings = tuple(_judge(name, f, reference, observe(f), result) for f in faults)
        finally:
            restore()
    return RerunReport(name, statements, findings)


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
    """Run :func:`check_rerun_safety`; raise :class:`AssertionError` listing unsafe points."""
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
