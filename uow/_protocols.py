"""The protocols shared by the runners, the adapters and the fakes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from uow._policy import RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Sequence

    from uow._faults import Fault, Injection, Point
    from uow._kinds import Classification

T = TypeVar("T")
U_co = TypeVar("U_co", covariant=True)


@runtime_checkable
class UnitOfWork(Protocol):
    """What a business operation receives: repositories as attributes, nothing to commit.

    Domain services type their parameter with a protocol of their own that lists the
    repositories they need, e.g. ``class Tasks(UnitOfWork, Protocol): tasks: TaskRepository``.
    The framework commits when the operation returns and rolls back when it raises.
    """

    @property
    def active(self) -> bool:
        """Whether the attempt this unit of work belongs to is still running."""

    def record_event(self, event: object) -> None:
        """Record a domain event, published once after the operation commits."""


class Repository(Protocol[T]):
    """The collection-like interface shared by the SQLAlchemy and in-memory repositories."""

    def add(self, entity: T) -> T:
        """Stage a new entity; it is written at the next flush, at the latest on commit."""

    def get(self, ident: Any) -> T | None:
        """Return the entity with this primary key, or ``None``."""

    def all(self) -> Sequence[T]:
        """Return every entity."""

    def remove(self, entity: T) -> None:
        """Stage the deletion of an entity."""


_DEFAULT_POLICY = RetryPolicy()


@dataclass(frozen=True, slots=True)
class AttemptInfo:
    """What an adapter is told about the attempt it opens a transaction for."""

    operation: str
    number: int
    """Attempt number, from 1."""
    deadline: float
    """``time.monotonic()`` value at which the operation's time budget ends."""
    policy: RetryPolicy = _DEFAULT_POLICY
    """The operation's policy, for adapters that act on its settings (the transaction guard)."""
    faults: Injection | None = None
    """The faults a test injected (``uow.testing.inject``), or ``None``: see `fault_at`."""
    isolation_level: str | None = None
    """The isolation level the runner asks for (``None``: the connection's own)."""

    def fault_at(self, at: Point) -> Fault | None:
        """For adapters: note that this attempt reached ``at``; return the fault due there."""
        return None if self.faults is None else self.faults.take(self, at)


class _TransactionState(Protocol[U_co]):
    @property
    def unit(self) -> U_co:
        """The unit of work handed to the operation."""

    @property
    def events(self) -> Sequence[object]:
        """Events the operation recorded in this attempt, published after it commits."""

    @property
    def errors(self) -> Sequence[BaseException]:
        """Database errors raised inside the attempt so far, including those its code caught."""

    @property
    def wrote(self) -> bool:
        """Whether the attempt has written anything (known after `prepare`).

        A transaction that wrote nothing cannot leave a lost COMMIT ambiguous.
        """


class Transaction(_TransactionState[U_co], Protocol[U_co]):
    """One attempt's database transaction, as a sync adapter opens it for the runner."""

    def prepare(self) -> None:
        """Before COMMIT: send pending writes, and load what the flush left unloaded.

        After it, any failure so far is known to roll back (safe to rerun).
        """

    def commit(self) -> None:
        """Commit; an error raised here may leave the outcome unknown."""

    def rollback(self) -> None:
        """Roll back; must not raise when the connection is already gone."""

    def close(self) -> None:
        """End the attempt: release the connection and make the unit of work unusable."""

    def committed(self, timeout: float) -> bool | None:
        """After a lost COMMIT, tell whether it was applied; ``None`` when it cannot tell.

        Called after [`close`][uow.Transaction.close], on a fresh connection, within ``timeout``
        seconds.
        """


class AsyncTransaction(_TransactionState[U_co], Protocol[U_co]):
    """One attempt's database transaction, as an async adapter opens it for the runner."""

    async def prepare(self) -> None:
        """As [`Transaction.prepare`][uow.Transaction.prepare]."""

    async def commit(self) -> None:
        """As [`Transaction.commit`][uow.Transaction.commit]."""

    async def rollback(self) -> None:
        """As [`Transaction.rollback`][uow.Transaction.rollback]."""

    async def close(self) -> None:
        """As [`Transaction.close`][uow.Transaction.close]."""

    async def committed(self, timeout: float) -> bool | None:  # noqa: ASYNC109 -- a bound for the driver's reads
        """As [`Transaction.committed`][uow.Transaction.committed]."""


class _BackendBase(Protocol[U_co]):
    @property
    def database(self) -> object:
        """What identifies the database: operations on the same one nest by joining."""

    def join(self, transaction: Any) -> U_co:
        """Return a unit of work of this backend on another backend's running transaction.

        Called for a nested operation when both backends have the same `database`;
        raises [`NestingError`][uow.NestingError] when it cannot share that transaction.
        """

    def classify(self, error: BaseException) -> Classification:
        """Say what an exception means; anything unknown is permanent."""


class Backend(_BackendBase[U_co], Protocol[U_co]):
    """What a sync adapter gives the runner: fresh transactions and error classification."""

    def begin(self, attempt: AttemptInfo) -> Transaction[U_co]:
        """Open a fresh transaction (and unit of work) for one attempt."""


class AsyncBackend(_BackendBase[U_co], Protocol[U_co]):
    """What an async adapter gives the async runner."""

    def begin(self, attempt: AttemptInfo) -> AsyncTransaction[U_co]:
        """Open a fresh transaction (and unit of work) for one attempt; no I/O yet."""
