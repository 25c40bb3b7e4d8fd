"""The in-memory store and the units of work it opens on it, sync and async.

The store keeps the committed tables; each attempt works on a private copy of them,
through its unit of work. The two know each other by name: a store opens units of work
of its ``unit_class`` (``InMemoryUnitOfWork`` unless told), and a unit-of-work class's
``factory`` makes the store it runs on.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Hashable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

from adapters.memory._errors import SimulatedError
from adapters.memory._transaction import AsyncMemoryTransaction, MemoryTransaction
from adapters.memory._work import Work
from uow import (
    AsyncRunner,
    AttemptInfo,
    AttemptScope,
    Classification,
    ErrorKind,
    NestingError,
    Runner,
    UnitOfWorkBase,
)

if TYPE_CHECKING:
    from typing import Self

    from typing_extensions import Unpack

    from adapters.memory._tables import Tables, TableSchema
    from adapters.memory._work import Savepoint
    from uow import AsyncRunnerOptions, RunnerOptions

RepositoryFactory = Callable[[Any], Any]
"""Builds a repository on one attempt's unit of work (a repository class fits)."""


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
        self.unit_class: type[MemoryUnit] = InMemoryUnitOfWork if unit_class is None else unit_class
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

    def begin(self, attempt: AttemptInfo) -> MemoryTransaction[InMemoryBackend, MemoryUnit]:
        """Open an attempt on a private copy of the committed tables."""
        self.attempts += 1
        work = Work(self, attempt)
        unit = self.unit_class(attempt, self.repositories, scope=AttemptScope(attempt), work=work)
        return MemoryTransaction(work, unit)

    def join(self, transaction: object) -> MemoryUnit:
        """Return a unit of work of this backend on another runner's attempt on this store."""
        joined: MemoryTransaction[InMemoryBackend, MemoryUnit] | None = (
            transaction if isinstance(transaction, MemoryTransaction) else None
        )
        if joined is None or joined.work.backend is not self:
            msg = "an in-memory unit of work can only join an attempt on the same store"
            raise NestingError(msg)
        return self.unit_class(
            joined.unit.attempt,
            self.repositories,
            scope=joined.unit.scope,
            work=joined.work,
        )

    def classify(self, error: BaseException) -> Classification:
        """Return the kind a simulated error carries; everything else is permanent."""
        if isinstance(error, SimulatedError):
            return Classification(error.kind, error.errno)
        return Classification(ErrorKind.PERMANENT)

    def __repr__(self) -> str:
        return f"InMemoryBackend(tables={sorted(self.tables)})"


class AsyncInMemoryBackend(InMemoryBackend):
    """The in-memory store for the async runner (``AsyncRunner``)."""

    def begin(  # type: ignore[override]
        self, attempt: AttemptInfo
    ) -> AsyncMemoryTransaction[InMemoryBackend, MemoryUnit]:
        """Open an attempt on a private copy of the committed tables."""
        return AsyncMemoryTransaction(super().begin(attempt))

    def join(self, transaction: object) -> MemoryUnit:
        """Join another async runner's attempt on this store."""
        if isinstance(transaction, AsyncMemoryTransaction):
            transaction = transaction._transaction  # noqa: SLF001 -- same package
        return super().join(transaction)


class MemoryUnit(UnitOfWorkBase):
    """What the sync and async in-memory units of work share: the attempt's working copy."""

    def __init__(
        self,
        attempt: AttemptInfo,
        repositories: Mapping[str, RepositoryFactory] | None = None,
        *,
        scope: AttemptScope | None = None,
        work: Work[InMemoryBackend] | None = None,
    ) -> None:
        """Work on ``work`` (the backend builds it; joined units share it)."""
        super().__init__(attempt, repositories, scope=scope)
        if work is None:
            msg = "in-memory units of work are made by InMemoryBackend.begin()"
            raise TypeError(msg)
        self._work = work

    @property
    def backend(self) -> InMemoryBackend:
        """The store this unit of work belongs to."""
        return self._work.backend

    def table(self, name: str, *, read: bool = True) -> dict[Hashable, Any]:
        """Return one table of this attempt's copy; a read flushes first and is a statement.

        For queries of a repository's own; prefer ``get`` and ``all``, which keep the
        identity map (and so the changes made to what they return) up to date.
        """
        self.check_active()
        if read:
            self._work.flush()
            self._work.statement()
        return self._work.tables.setdefault(name, {})

    def stage(self, repository: TableSchema, entity: object, *, added: bool) -> None:
        """Stage an addition or removal until the next flush.

        Removing an entity that was never written raises SQLAlchemy's
        ``InvalidRequestError``, as ``Session.delete()`` does.
        """
        self.check_active()
        self._work.stage(repository, entity, added=added)

    def _flush(self) -> None:
        self.check_active()
        self._work.flush()

    def _nested(self) -> Savepoint:
        self.check_active()
        return self._work.begin_nested()


class InMemoryUnitOfWork(MemoryUnit):
    """One attempt's unit of work over a private copy of the tables."""

    def flush(self) -> None:
        """Write pending changes to the attempt's copy now: ids are assigned, keys checked."""
        self._flush()

    @contextmanager
    def begin_nested(self) -> Iterator[None]:
        """Open a savepoint, as ``Session.begin_nested()``: an error undoes only the block.

        Entering flushes; leaving normally flushes the block's changes. An error raised in
        the block (an ``IntegrityError`` of its flush too) rolls back what the block did, and
        propagates; catch it around the block, and the attempt goes on.
        """
        savepoint = self._nested()
        try:
            yield
        except BaseException:
            self._work.rollback_to(savepoint)
            raise
        self._work.release(savepoint)

    @classmethod
    def factory(
        cls,
        *,
        repositories: Mapping[str, RepositoryFactory] | None = None,
        commit_markers: bool = False,
        **options: Unpack[RunnerOptions],
    ) -> Runner[Self]:
        """Return a runner on a new in-memory store (reach it as ``runner.backend``)."""
        backend = InMemoryBackend(repositories, unit_class=cls, commit_markers=commit_markers)
        return Runner(backend, **options)  # type: ignore[arg-type]


class AsyncInMemoryUnitOfWork(MemoryUnit):
    """The async twin, for operations run by an ``AsyncRunner``: ``await uow.flush()``."""

    async def flush(self) -> None:
        """Write pending changes to the attempt's copy now: ids are assigned, keys checked."""
        self._flush()

    @asynccontextmanager
    async def begin_nested(self) -> AsyncIterator[None]:
        """Open a savepoint, as ``AsyncSession.begin_nested()``: ``async with uow.begin_nested()``.

        See [`InMemoryUnitOfWork.begin_nested`][adapters.memory.InMemoryUnitOfWork.begin_nested].
        """
        savepoint = self._nested()
        try:
            yield
        except BaseException:
            self._work.rollback_to(savepoint)
            raise
        self._work.release(savepoint)

    @classmethod
    def factory(
        cls,
        *,
        repositories: Mapping[str, RepositoryFactory] | None = None,
        commit_markers: bool = False,
        **options: Unpack[AsyncRunnerOptions],
    ) -> AsyncRunner[Self]:
        """Return an async runner on a new in-memory store (``runner.backend``)."""
        backend = AsyncInMemoryBackend(repositories, unit_class=cls, commit_markers=commit_markers)
        return AsyncRunner(backend, **options)  # type: ignore[arg-type]
