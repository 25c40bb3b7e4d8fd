"""The in-memory repositories, sync and async: tables of one attempt's unit of work."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Sequence

    from adapters.memory._store import MemoryUnit

T = TypeVar("T")


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
