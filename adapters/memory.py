"""In-memory unit of work and repository, for fast unit tests of domain services.

They follow the same protocols as the SQLAlchemy adapter, commit and roll back like
a database (a failed attempt leaves no trace), and can simulate transient failures
so that tests can prove an operation survives being rerun.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from uow import (
    AttemptInfo,
    Classification,
    ErrorKind,
    EventHandlers,
    RetryHook,
    RetryPolicy,
    Runner,
    UnitOfWorkBase,
)
from uow.testing import injected_fault

T = TypeVar("T")
RepositoryFactory = Callable[["InMemoryUnitOfWork"], Any]
Tables = dict[str, dict[Hashable, Any]]


class SimulatedError(Exception):
    """A database failure of a given kind, raised by :meth:`InMemoryBackend.fail`."""

    def __init__(self, kind: ErrorKind, errno: int | None = None) -> None:
        """Describe the simulated failure by its kind (and errno, for log assertions)."""
        super().__init__(
            f"simulated {kind.value} failure" + ("" if errno is None else f" ({errno})")
        )
        self.kind = kind
        self.errno = errno


@dataclass
class _Fault:
    kind: ErrorKind
    errno: int | None
    at: Literal["statement", "commit"]
    statement: int
    times: int
    committed: bool


class InMemoryBackend:
    """A tiny transactional store: committed tables, a private copy per attempt."""

    def __init__(
        self,
        repositories: Mapping[str, RepositoryFactory] | None = None,
        *,
        commit_markers: bool = False,
    ) -> None:
        """Register the repositories; ``commit_markers`` lets lost COMMITs be resolved."""
        self.tables: Tables = {}
        self.commit_markers = commit_markers
        self.repositories = dict(repositories or {})
        self.attempts = 0
        self.commits = 0
        self._faults: list[_Fault] = []
        self._ids = itertools.count(1)

    def fail(
        self,
        kind: ErrorKind,
        *,
        errno: int | None = None,
        at: Literal["statement", "commit"] = "statement",
        statement: int = 1,
        times: int = 1,
        committed: bool = False,
    ) -> None:
        """Make the next ``times`` attempts fail with a :class:`SimulatedError`.

        ``at="statement"`` fails on the ``statement``-th repository call of the attempt;
        ``at="commit"`` fails at commit, after the data was applied if ``committed``
        (a lost COMMIT reply).
        """
        self._faults.append(_Fault(kind, errno, at, statement, times, committed))

    def next_id(self) -> int:
        """Return a fresh identifier, like an auto-increment column."""
        return next(self._ids)

    def begin(self, attempt: AttemptInfo) -> _MemoryTransaction:
        """Open an attempt on a private copy of the committed tables."""
        self.attempts += 1
        return _MemoryTransaction(self, InMemoryUnitOfWork(self, attempt))

    def classify(self, error: BaseException) -> Classification:
        """Return the kind a simulated error carries; everything else is permanent."""
        if isinstance(error, SimulatedError):
            return Classification(error.kind, error.errno)
        return Classification(ErrorKind.PERMANENT)

    def _take_fault(
        self, attempt: AttemptInfo, at: Literal["statement", "commit"], statement: int = 0
    ) -> _Fault | None:
        """Return the fault due here: ``uow.testing.inject``'s first, then :meth:`fail`'s."""
        injected = injected_fault(attempt, "commit" if at == "commit" else statement)
        if injected is not None:
            return _Fault(injected.kind, injected.errno, at, statement, 1, injected.committed)
        for fault in self._faults:
            if fault.at == at and (at == "commit" or fault.statement == statement):
                fault.times -= 1
                if fault.times == 0:
                    self._faults.remove(fault)
                return fault
        return None

    def __repr__(self) -> str:
        return f"InMemoryBackend(tables={sorted(self.tables)})"


class InMemoryUnitOfWork(UnitOfWorkBase):
    """One attempt's unit of work over a private copy of the tables."""

    def __init__(self, backend: InMemoryBackend, attempt: AttemptInfo) -> None:
        """Copy the committed tables; nothing is visible to others until commit."""
        super().__init__(attempt, backend.repositories)
        self._backend = backend
        self.tables: Tables = copy.deepcopy(backend.tables)
        self._statements = 0
        self.errors_raised: list[SimulatedError] = []

    @property
    def backend(self) -> InMemoryBackend:
        """The store this unit of work belongs to."""
        return self._backend

    def table(self, name: str) -> dict[Hashable, Any]:
        """Return one table of this attempt's copy, counting the call as a statement."""
        self.check_active()
        self._statements += 1
        fault = self._backend._take_fault(self.attempt, "statement", self._statements)  # noqa: SLF001
        if fault is not None:
            error = SimulatedError(fault.kind, fault.errno)
            self.errors_raised.append(error)
            raise error
        return self.tables.setdefault(name, {})

    @classmethod
    def factory(
        cls,
        *,
        repositories: Mapping[str, RepositoryFactory] | None = None,
        policy: RetryPolicy | None = None,
        hooks: Sequence[RetryHook] = (),
        commit_markers: bool = False,
        event_handlers: EventHandlers | None = None,
    ) -> Runner[Any]:
        """Return a runner on a new in-memory store (reach it as ``runner.backend``)."""
        backend = InMemoryBackend(repositories, commit_markers=commit_markers)
        return Runner(backend, policy=policy, hooks=hooks, event_handlers=event_handlers)


class _MemoryTransaction:
    def __init__(self, backend: InMemoryBackend, unit: InMemoryUnitOfWork) -> None:
        self._backend = backend
        self.unit = unit
        self._applied = False

    @property
    def events(self) -> Sequence[object]:
        return self.unit.events

    def flush(self) -> None:
        """Nothing to send (the copy is the pending state); refuse swallowed errors."""
        self.unit.refuse_swallowed_errors(self.unit.errors_raised, self._backend.classify)

    def commit(self) -> None:
        fault = self._backend._take_fault(self.unit.attempt, "commit")  # noqa: SLF001
        if fault is not None and not fault.committed:
            raise SimulatedError(fault.kind, fault.errno)
        # A copy again, so objects the operation returns never alias the store.
        self._backend.tables = copy.deepcopy(self.unit.tables)
        self._backend.commits += 1
        self._applied = True
        if fault is not None:
            raise SimulatedError(fault.kind, fault.errno)

    def rollback(self) -> None:
        """Drop the attempt's copy: nothing of it reaches the store."""

    def close(self) -> None:
        self.unit.close()

    def committed(self, timeout: float) -> bool | None:  # noqa: ARG002 -- nothing to wait for
        """With commit markers on, say whether this attempt's data reached the store."""
        return self._applied if self._backend.commit_markers else None


class InMemoryRepository(Generic[T]):
    """A repository over one in-memory table, keyed by ``id_attribute``.

    Entities whose identifier is ``None`` get one on :meth:`add`, like an
    auto-increment column. Set ``table_name`` to share a table between repositories.
    """

    id_attribute: str = "id"
    table_name: str | None = None

    def __init__(self, uow: InMemoryUnitOfWork) -> None:
        """Build the repository on one attempt's unit of work."""
        self._uow = uow

    def _table(self) -> dict[Hashable, Any]:
        return self._uow.table(self.table_name or type(self).__qualname__)

    def add(self, entity: T) -> T:
        """Stage a new entity under its identifier (assigned when missing)."""
        table = self._table()
        if getattr(entity, self.id_attribute, None) is None:
            setattr(entity, self.id_attribute, self._uow.backend.next_id())
        table[getattr(entity, self.id_attribute)] = entity
        return entity

    def get(self, ident: Any) -> T | None:
        """Return the entity with this identifier, or ``None``."""
        entity: T | None = self._table().get(ident)
        return entity

    def all(self) -> Sequence[T]:
        """Return every entity, in insertion order."""
        return list(self._table().values())

    def remove(self, entity: T) -> None:
        """Stage the deletion of an entity."""
        self._table().pop(getattr(entity, self.id_attribute), None)
