"""The in-memory units of work and repositories, sync and async."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from adapters.memory._store import AsyncInMemoryBackend, InMemoryBackend
from uow import AsyncRunner, AttemptInfo, AttemptScope, Runner, UnitOfWorkBase

if TYPE_CHECKING:
    from typing import Self

    from typing_extensions import Unpack

    from adapters.memory._work import Savepoint, Work
    from uow import AsyncRunnerOptions, RunnerOptions

T = TypeVar("T")
RepositoryFactory = Callable[[Any], Any]


class MemoryUnit(UnitOfWorkBase):
    """What the sync and async in-memory units of work share: the attempt's working copy."""

    def __init__(
        self,
        attempt: AttemptInfo,
        repositories: Mapping[str, RepositoryFactory] | None = None,
        *,
        scope: AttemptScope | None = None,
        work: Work | None = None,
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

    def stage(self, repository: RepositoryBase[Any], entity: object, *, added: bool) -> None:
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
        backend = AsyncInMemoryBackend(
            repositories, unit_class=cls, commit_markers=commit_markers
        )
        return AsyncRunner(backend, **options)  # type: ignore[arg-type]


class RepositoryBase(Generic[T]):
    """What the sync and async in-memory repositories share: the table and staging.

    ``add`` stages an entity; the flush (explicit, before a read, or at commit) gives it
    an id when it has none. ``unique`` names attributes whose values must not repeat, as
    a UNIQUE index does (``None`` never clashes). Set ``table_name`` to share a table
    between repositories.
    """

    id_attribute: str = "id"
    table_name: str | None = None
    unique: tuple[str, ...] = ()

    def __init__(self, uow: MemoryUnit) -> None:
        """Build the repository on one attempt's unit of work."""
        self._uow = uow

    def table(self) -> str:
        """Return the name of this repository's table."""
        return self.table_name or type(self).__qualname__

    def add(self, entity: T) -> T:
        """Stage a new entity; it gets its id at the next flush."""
        self._uow.stage(self, entity, added=True)
        return entity

    def _get(self, ident: Any) -> T | None:
        self._uow.check_active()
        entity: T | None = self._uow._work.get(self, ident)  # noqa: SLF001 -- same package
        return entity

    def _all(self) -> Sequence[T]:
        self._uow.check_active()
        return list(self._uow._work.read(self))  # noqa: SLF001 -- same package


class InMemoryRepository(RepositoryBase[T]):
    """A repository over one in-memory table, keyed by ``id_attribute``."""

    def get(self, ident: Any) -> T | None:
        """Return the entity with this identifier, or ``None``.

        One this attempt already read or wrote comes from the identity map, without a
        statement or a flush; otherwise pending changes are flushed and the row is read.
        """
        return self._get(ident)

    def all(self) -> Sequence[T]:
        """Return every entity, by primary key (flushes first)."""
        return self._all()

    def remove(self, entity: T) -> None:
        """Stage the deletion of an entity."""
        self._uow.stage(self, entity, added=False)


class AsyncInMemoryRepository(RepositoryBase[T]):
    """The async twin: ``get``, ``all`` and ``remove`` are awaited, as on ``AsyncSession``."""

    async def get(self, ident: Any) -> T | None:
        """Return the entity with this identifier, or ``None`` (as the sync ``get``)."""
        return self._get(ident)

    async def all(self) -> Sequence[T]:
        """Return every entity, by primary key (flushes first)."""
        return self._all()

    async def remove(self, entity: T) -> None:
        """Stage the deletion of an entity."""
        self._uow.stage(self, entity, added=False)
