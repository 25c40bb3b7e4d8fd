"""The protocols shared by the runner, the adapters and the fakes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Sequence

    from uow._kinds import Classification
from uow._policy import RetryPolicy

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
        """Stage a new entity; it is written when the operation commits."""

    def get(self, ident: Any) -> T | None:
        """Return the entity with this primary key, or ``None``."""

    def all(self) -> Sequence[T]:
        """Return every entity."""

    def remove(self, entity: T) -> None:
        """Stage the deletion of an entity."""


class Transaction(Protocol[U_co]):
    """One attempt's database transaction, as an adapter opens it for the runner."""

    @property
    def unit(self) -> U_co:
        """The unit of work handed to the operation."""

    @property
    def events(self) -> Sequence[object]:
        """Events the operation recorded in this attempt, published after it commits."""

    def flush(self) -> None:
        """Send pending writes, so any failure before COMMIT is known to roll back."""

    def commit(self) -> None:
        """Commit; an error raised here may leave the outcome unknown."""

    def rollback(self) -> None:
        """Roll back; must not raise when the connection is already gone."""

    def close(self) -> None:
        """End the attempt: release the connection and make the unit of work unusable."""

    def committed(self, timeout: float) -> bool | None:
        """After a lost COMMIT, tell whether it was applied; ``None`` when it cannot tell.

        Called after :meth:`close`, on a fresh connection, within ``timeout`` seconds.
        """


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


class Backend(Protocol[U_co]):
    """What an adapter gives the runner: fresh transactions and error classification."""

    def begin(self, attempt: AttemptInfo) -> Transaction[U_co]:
        """Open a fresh transaction (and unit of work) for one attempt."""

    def classify(self, error: BaseException) -> Classification:
        """Say what an exception means; anything unknown is permanent."""
