"""The in-memory store: committed tables, one private working copy per attempt."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError

from uow import AttemptInfo, AttemptScope, Classification, ErrorKind, NestingError

if TYPE_CHECKING:
    from adapters.memory._units import MemoryUnit, RepositoryBase
    from uow._faults import Point

RepositoryFactory = Callable[[Any], Any]
Tables = dict[str, dict[Hashable, Any]]


class SimulatedError(Exception):
    """A database failure of a given kind, raised where an injected fault strikes."""

    def __init__(self, kind: ErrorKind, errno: int | None = None) -> None:
        """Describe the simulated failure by its kind (and errno, for log assertions)."""
        super().__init__(
            f"simulated {kind.value} failure" + ("" if errno is None else f" ({errno})")
        )
        self.kind = kind
        self.errno = errno


class DuplicateKey(Exception):
    """The stand-in driver error behind the ``IntegrityError`` of a duplicate key."""


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
        self.tables: Tables = {}
        self.commit_markers = commit_markers
        self.repositories = dict(repositories or {})
        if unit_class is None:
            from adapters.memory._units import InMemoryUnitOfWork  # noqa: PLC0415 -- a cycle

            unit_class = InMemoryUnitOfWork
        self.unit_class = unit_class
        self.attempts = 0
        self.commits = 0
        self._ids = itertools.count(1)

    @property
    def database(self) -> object:
        """The store itself: runners on the same store nest by joining."""
        return self

    def next_id(self) -> int:
        """Return a fresh identifier, like an auto-increment column (never reused)."""
        return next(self._ids)

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


class Work:
    """One attempt's working copy, pending changes and what went wrong, shared by joined units."""

    def __init__(self, backend: InMemoryBackend, attempt: AttemptInfo) -> None:
        self.backend = backend
        self.attempt = attempt
        self.tables: Tables = copy.deepcopy(backend.tables)
        self.pending: list[tuple[RepositoryBase[Any], Any, bool]] = []
        """(repository, entity, added): added, or removed when ``added`` is false."""
        self.errors: list[BaseException] = []
        self.statements = 0
        self.flushed = False

    def statement(self) -> None:
        """Count one statement; raise the injected fault due there."""
        self.statements += 1
        self.strike(self.statements)

    def strike(self, at: Point) -> None:
        fault = self.attempt.fault_at(at)
        if fault is not None:
            error = SimulatedError(fault.kind, fault.errno)
            self.errors.append(error)
            raise error

    def flush(self) -> None:
        """Apply pending additions and removals: ids assigned, unique keys checked."""
        if not self.pending:
            return
        self.statement()
        pending, self.pending = self.pending, []
        for repository, entity, added in pending:
            table = self.tables.setdefault(repository.table(), {})
            if not added:
                table.pop(getattr(entity, repository.id_attribute), None)
                continue
            if getattr(entity, repository.id_attribute, None) is None:
                setattr(entity, repository.id_attribute, self.backend.next_id())
            key = getattr(entity, repository.id_attribute)
            clash = "primary key" if key in table and table[key] is not entity else None
            for column in repository.unique:
                value = getattr(entity, column)
                others = (other for other in table.values() if other is not entity)
                if any(getattr(other, column) == value for other in others):
                    clash = column
            if clash is not None:
                error = IntegrityError(
                    f"INSERT INTO {repository.table()}",
                    {},
                    DuplicateKey(f"duplicate {clash} in {repository.table()}: {key!r}"),
                )
                self.errors.append(error)
                raise error
            table[key] = entity
        self.flushed = True


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
        self.work.flush()
        # A read leaves an empty table in the attempt's copy where the store has none:
        # that is not a write, so only tables with rows are compared.
        self.wrote = self.work.flushed or _rows(self.work.tables) != _rows(self.work.backend.tables)

    def commit(self) -> None:
        fault = self.work.attempt.fault_at("commit")
        if fault is not None:
            if fault.committed:
                self._commit()  # applied; only the reply is lost
            raise SimulatedError(fault.kind, fault.errno)
        self._commit()

    def _commit(self) -> None:
        # A copy again, so that objects the operation returns never alias the store.
        self.work.backend.tables = copy.deepcopy(self.work.tables)
        self.work.backend.commits += 1
        self._applied = True

    def rollback(self) -> None:
        """Drop the attempt's copy: nothing of it reaches the store."""

    def close(self) -> None:
        self.unit.close()

    def committed(self, timeout: float) -> bool | None:  # noqa: ARG002 -- nothing to wait for
        """With commit markers on, say whether this attempt's data reached the store."""
        return self._applied if self.work.backend.commit_markers else None


def _rows(tables: Tables) -> Tables:
    """Return the tables that hold rows."""
    return {name: rows for name, rows in tables.items() if rows}




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
