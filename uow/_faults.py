"""Injected faults: a database-agnostic description of where an attempt should fail.

Tests describe faults with [`Fault`][uow.testing.Fault] and arm them with
[`inject`][uow.testing.inject]. The runner hands the active injection to the adapters with each
attempt ([`uow.AttemptInfo.faults`][uow.AttemptInfo.faults]); they ask
[`uow.AttemptInfo.fault_at`][uow.AttemptInfo.fault_at] at every statement and at COMMIT, and raise
the realistic error of their database for the fault due there. Adapters never import this module or
``uow.testing``.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from uow._kinds import ErrorKind, commit_outcome_unknown

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

Point = int | Literal["commit"]
"""Where a fault strikes in an attempt: the N-th statement (from 1) or its COMMIT."""


class _Attempt(Protocol):
    """What an injection needs to know of the attempt that reached a point."""

    @property
    def operation(self) -> str: ...

    @property
    def number(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Fault:
    """A transient failure to simulate at one point of an attempt, whatever the database.

    ``at`` is the number of the statement (from 1, counted per attempt) or ``"commit"``;
    ``committed`` says whether a COMMIT whose reply was lost had been applied (only for
    kinds that leave the outcome unknown: a lost connection, a failover); ``times`` is
    the number of attempts it strikes. ``errno`` ``None`` lets the adapter pick the usual
    one for the kind. Each adapter raises what its driver would.
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
    """The faults of one `inject` block and what the backends met while it was on."""

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

    def take(self, attempt: _Attempt, at: Point) -> Fault | None:
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

    Scoped to the current context (thread or asyncio task); an inner block replaces the outer one's
    faults until it ends. With ``strict`` (the default), leaving the block normally while a fault
    never fired raises `AssertionError`: a fault that did not strike proves nothing. Backends learn
    of it through [`uow.AttemptInfo.faults`][uow.AttemptInfo.faults].
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


current_injection: Callable[[], Injection | None] = _injection.get
"""Return the injection active in this context, for the runner to hand to adapters.

(The context variable's own ``get``: every operation asks, and most get ``None``.)"""
