"""The in-memory store: committed tables, one private working copy per attempt."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from adapters.memory._work import SimulatedError, Work, entity_state
from uow import AttemptInfo, AttemptScope, Classification, ErrorKind, NestingError

if TYPE_CHECKING:
    from adapters.memory._units import MemoryUnit

RepositoryFactory = Callable[[Any], Any]
Tables = dict[str, dict[Hashable, Any]]


class InMemoryBackend:
    """A tiny transactional store: committed tables, a private copy per attempt."""

    def __init__(
        self,
        repositories: Mapping[str, RepositoryFactory] | None = None,
        *,
        unit_class: type[MemoryUnit] | None = None,
        commit_markers: bool = False,
    ) -> None:
        """Register the repositories; ``commit_markers`` lets lost COMMITs be resolved."""
        self._tables: Tables = {}
        self._last_ids: dict[str, int] = {}
        self._ids: Iterator[int] = itertools.count(1)
        self.commit_markers = commit_markers
        self.repositories = dict(repositories or {})
        if unit_class is None:
            from adapters.memory._units import InMemoryUnitOfWork  # noqa: PLC0415 -- a cycle

            unit_class = InMemoryUnitOfWork
        self.unit_class = unit_class
        self.attempts = 0
        self.commits = 0

    @property
    def tables(self) -> Tables:
        """The committed tables, by name: each maps primary keys to entities."""
        return self._tables

    @tables.setter
    def tables(self, tables: Tables) -> None:
        """Replace the store's content (a test's reset): each sequence continues after its table."""
        self._tables = tables
        self._last_ids = {}
        for name, rows in tables.items():
            for ident in rows:
                self.used_id(name, ident)

    def apply(self, tables: Tables) -> None:
        """Make an attempt's tables the committed ones: its COMMIT (ids it took stay taken)."""
        self._tables = tables
        self.commits += 1

    @property
    def database(self) -> object:
        """The store itself: runners on the same store nest by joining."""
        return self

    def next_id(self, table: str | None = None) -> int:
        """Return a fresh id of ``table``, as its auto-increment column gives (never reused).

        Each table has a sequence of its own, which ids given explicitly move past; without
        a table, ids come from one sequence of the store's.
        """
        if table is None:
            return next(self._ids)
        ident = self._last_ids.get(table, 0) + 1
        self._last_ids[table] = ident
        return ident

    def used_id(self, table: str, ident: object) -> None:
        """Note an id given explicitly: the table's sequence continues after it."""
        if isinstance(ident, int) and not isinstance(ident, bool):
            self._last_ids[table] = max(self._last_ids.get(table, 0), ident)

    def begin(self, attempt: AttemptInfo) -> MemoryTransaction:
        """Open an attempt on a private copy of the committed tables."""
        self.attempts += 1
        work = Work(self, attempt)
        unit = self.unit_class(attempt, self.repositories, scope=AttemptScope(attempt), work=work)
        return MemoryTransaction(work, unit)

    def join(self, transaction: object) -> MemoryUnit:
        """Return a unit of work of this backend on another runner's attempt on this store."""
        if not isinstance(transaction, MemoryTransaction) or transaction.work.backend is not self:
            msg = "an in-memory unit of work can only join an attempt on the same store"
            raise NestingError(msg)
        return self.unit_class(
            transaction.unit.attempt,
            self.repositories,
            scope=transaction.unit.scope,
            work=transaction.work,
        )

    def classify(self, error: BaseException) -> Classification:
        """Return the kind a simulated error carries; everything else is permanent."""
        if isinstance(error, SimulatedError):
            return Classification(error.kind, error.errno)
        return Classification(ErrorKind.PERMANENT)

    def __repr__(self) -> str:
        return f"InMemoryBackend(tables={sorted(self.tables)})"


class MemoryTransaction:
    """The runner's handle on one attempt's working copy."""

    def __init__(self, work: Work, unit: MemoryUnit) -> None:
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


class AsyncMemoryTransaction:
    """The async runner's handle: the same transaction, awaited."""

    def __init__(self, transaction: MemoryTransaction) -> None:
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


class AsyncInMemoryBackend(InMemoryBackend):
    """The in-memory store for the async runner (``AsyncRunner``)."""

    def begin(self, attempt: AttemptInfo) -> AsyncMemoryTransaction:  # type: ignore[override]
        """Open an attempt on a private copy of the committed tables."""
        return AsyncMemoryTransaction(super().begin(attempt))

    def join(self, transaction: object) -> MemoryUnit:
        """Join another async runner's attempt on this store."""
        if isinstance(transaction, AsyncMemoryTransaction):
            transaction = transaction._transaction  # noqa: SLF001 -- its own module
        return super().join(transaction)
