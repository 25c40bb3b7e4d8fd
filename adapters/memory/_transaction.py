"""The runner's handles on one attempt of the in-memory store, sync and async: its COMMIT."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from adapters.memory._errors import SimulatedError
from adapters.memory._tables import Tables, entity_state
from adapters.memory._work import Store

if TYPE_CHECKING:
    from collections.abc import Hashable, Sequence

    from adapters.memory._work import Work


class CommitTarget(Store, Protocol):
    """The store an attempt commits to: its tables become the committed ones."""

    commit_markers: bool
    """Whether a lost COMMIT can be resolved (``committed`` tells)."""

    def apply(self, tables: Tables) -> None:
        """Make an attempt's tables the committed ones: its COMMIT."""


class AttemptUnit(Protocol):
    """The unit of work an attempt hands to the operation: its events, and its end."""

    @property
    def events(self) -> Sequence[object]:
        """Events recorded in this attempt, published after it commits."""

    def close(self) -> None:
        """End the attempt's use of the unit of work."""


B = TypeVar("B", bound=CommitTarget)
U = TypeVar("U", bound=AttemptUnit)


class MemoryTransaction(Generic[B, U]):
    """The runner's handle on one attempt's working copy."""

    def __init__(self, work: Work[B], unit: U) -> None:
        self.work = work
        self.unit = unit
        self._applied = False
        self.wrote = False

    @property
    def events(self) -> Sequence[object]:
        return self.unit.events

    @property
    def errors(self) -> Sequence[BaseException]:
        return self.work.errors

    def prepare(self) -> None:
        work = self.work
        work.check_usable()  # a rolled-back attempt cannot commit, as on SQLAlchemy
        work.flush()
        # Repositories of one's own may write to ``uow.table(...)`` directly, unseen by flushes.
        self.wrote = work.wrote or _content(work.tables) != _content(work.backend.tables)

    def commit(self) -> None:
        fault = self.work.attempt.fault_at("commit")
        if fault is not None:
            if fault.committed:
                self._commit()  # applied; only the reply is lost
            raise SimulatedError(fault.kind, fault.errno)
        self._commit()

    def _commit(self) -> None:
        # A copy again, so that objects the operation returns never alias the store.
        self.work.backend.apply(copy.deepcopy(self.work.tables))
        self._applied = True

    def rollback(self) -> None:
        """Drop the attempt's copy: nothing of it reaches the store."""

    def close(self) -> None:
        self.unit.close()

    def committed(self, timeout: float) -> bool | None:  # noqa: ARG002 -- nothing to wait for
        """With commit markers on, say whether this attempt's data reached the store."""
        return self._applied if self.work.backend.commit_markers else None


def _content(tables: Tables) -> dict[str, dict[Hashable, dict[str, Any]]]:
    """Return the rows of the tables that hold any, as attribute values (not objects)."""
    return {
        name: {key: entity_state(entity) for key, entity in rows.items()}
        for name, rows in tables.items()
        if rows
    }


class AsyncMemoryTransaction(Generic[B, U]):
    """The async runner's handle: the same transaction, awaited."""

    def __init__(self, transaction: MemoryTransaction[B, U]) -> None:
        self._transaction = transaction
        self.unit = transaction.unit

    @property
    def events(self) -> Sequence[object]:
        return self._transaction.events

    @property
    def errors(self) -> Sequence[BaseException]:
        return self._transaction.errors

    @property
    def wrote(self) -> bool:
        return self._transaction.wrote

    async def prepare(self) -> None:
        self._transaction.prepare()

    async def commit(self) -> None:
        self._transaction.commit()

    async def rollback(self) -> None:
        self._transaction.rollback()

    async def close(self) -> None:
        self._transaction.close()

    async def committed(self, timeout: float) -> bool | None:  # noqa: ASYNC109 -- protocol
        return self._transaction.committed(timeout)
