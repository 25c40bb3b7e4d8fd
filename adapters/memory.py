"""In-memory unit of work and repository: a faithful fake for fast unit tests of domain services.

It follows the same protocols as the SQLAlchemy adapter and behaves as it does
wherever user code can see it:

- entities added to a repository are pending until a flush (``uow.flush()``, a read
  through a repository, or the commit), which assigns missing ids, as an
  auto-increment column does at INSERT;
- within an attempt a repository returns the same object for the same id;
- a duplicate id, or a duplicate value of a column listed in ``unique``, raises
  SQLAlchemy's ``IntegrityError`` at the flush;
- an attempt works on a private copy: a failed attempt leaves no trace, and objects
  returned after the commit are detached copies that stay readable.

Faults injected with :func:`uow.testing.inject` strike here too: every repository
call that reads or flushes is a statement.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy.exc import IntegrityError

from uow import (
    AttemptInfo,
    AttemptScope,
    Classification,
    ErrorKind,
    NestingError,
    Runner,
    RunnerOptions,
    UnitOfWorkBase,
)

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack

    from uow._faults import Point

__all__ = [
    "DuplicateKey",
    "InMemoryBackend",
    "InMemoryRepository",
    "InMemoryUnitOfWork",
    "SimulatedError",
]

T = TypeVar("T")
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
        unit_class: type[InMemoryUnitOfWork] | None = None,
        commit_markers: bool = False,
    ) -> None:
        """Register the repositories; ``commit_markers`` lets lost COMMITs be resolved."""
        self.tables: Tables = {}
        self.commit_markers = commit_markers
        self.repositories = dict(repositories or {})
        self.unit_class = unit_class or InMemoryUnitOfWork
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

    def begin(self, attempt: AttemptInfo) -> _MemoryTransaction:
        """Open an attempt on a private copy of the committed tables."""
        self.attempts += 1
        work = _Work(self, attempt)
        unit = self.unit_class(attempt, self.repositories, scope=AttemptScope(attempt), work=work)
        return _MemoryTransaction(work, unit)

    def join(self, transaction: object) -> InMemoryUnitOfWork:
        """Return a unit of work of this backend on another runner's attempt on this store."""
        if not isinstance(transaction, _MemoryTransaction) or transaction.work.backend is not self:
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


class _Work:
    """One attempt's working copy, pending changes and what went wrong, shared by joined units."""

    def __init__(self, backend: InMemoryBackend, attempt: AttemptInfo) -> None:
        self.backend = backend
        self.attempt = attempt
        self.tables: Tables = copy.deepcopy(backend.tables)
        self.pending: list[tuple[InMemoryRepository[Any], Any, bool]] = []
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


class InMemoryUnitOfWork(UnitOfWorkBase):
    """One attempt's unit of work over a private copy of the tables."""

    def __init__(
        self,
        attempt: AttemptInfo,
        repositories: Mapping[str, RepositoryFactory] | None = None,
        *,
        scope: AttemptScope | None = None,
        work: _Work | None = None,
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

    def flush(self) -> None:
        """Write pending changes to the attempt's copy now: ids are assigned, keys checked."""
        self.check_active()
        self._work.flush()

    def table(self, name: str, *, read: bool = True) -> dict[Hashable, Any]:
        """Return one table of this attempt's copy; a read flushes first and is a statement."""
        self.check_active()
        if read:
            self._work.flush()
            self._work.statement()
        return self._work.tables.setdefault(name, {})

    def stage(self, repository: InMemoryRepository[Any], entity: object, *, added: bool) -> None:
        """Stage an addition or removal until the next flush."""
        self.check_active()
        self._work.pending.append((repository, entity, added))

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


class _MemoryTransaction:
    def __init__(self, work: _Work, unit: InMemoryUnitOfWork) -> None:
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


class InMemoryRepository(Generic[T]):
    """A repository over one in-memory table, keyed by ``id_attribute``.

    ``add`` stages an entity; the flush (explicit, before a read, or at commit) gives it
    an id when it has none. ``unique`` names attributes whose values must not repeat.
    Set ``table_name`` to share a table between repositories.
    """

    id_attribute: str = "id"
    table_name: str | None = None
    unique: tuple[str, ...] = ()

    def __init__(self, uow: InMemoryUnitOfWork) -> None:
        """Build the repository on one attempt's unit of work."""
        self._uow = uow

    def table(self) -> str:
        """Return the name of this repository's table."""
        return self.table_name or type(self).__qualname__

    def add(self, entity: T) -> T:
        """Stage a new entity; it gets its id at the next flush."""
        self._uow.stage(self, entity, added=True)
        return entity

    def get(self, ident: Any) -> T | None:
        """Return the entity with this identifier, or ``None`` (flushes first)."""
        entity: T | None = self._uow.table(self.table()).get(ident)
        return entity

    def all(self) -> Sequence[T]:
        """Return every entity, in insertion order (flushes first)."""
        return list(self._uow.table(self.table()).values())

    def remove(self, entity: T) -> None:
        """Stage the deletion of an entity."""
        self._uow.stage(self, entity, added=False)
