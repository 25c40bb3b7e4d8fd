"""The generic repository of one mapped class, on an attempt's unit of work."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy import select

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.orm import Session

    from adapters.sqlalchemy._backend import SqlAlchemyUnitOfWork

T = TypeVar("T")


class SqlAlchemyRepository(Generic[T]):
    """A generic repository of one mapped class; subclass it and set ``model``.

        class TaskRepository(SqlAlchemyRepository[Task]):
            model = Task

            def by_name(self, name: str) -> Task | None:
                return self.session.scalars(select(Task).where(Task.name == name)).first()

    It never commits or rolls back: the unit of work owns the transaction.
    """

    model: type[T]

    def __init__(self, uow: SqlAlchemyUnitOfWork[Any]) -> None:
        """Build the repository on one attempt's unit of work."""
        self._uow = uow

    @property
    def session(self) -> Session:
        """The attempt's session; raises once the attempt has ended."""
        session: Session = self._uow.session
        return session

    def add(self, entity: T) -> T:
        """Stage a new entity; it is written at the next flush, at the latest on commit."""
        self.session.add(entity)
        return entity

    def get(self, ident: Any) -> T | None:
        """Return the entity with this primary key, or ``None``."""
        return self.session.get(self.model, ident)

    def all(self) -> Sequence[T]:
        """Return every entity of the model."""
        return self.session.scalars(select(self.model)).all()

    def remove(self, entity: T) -> None:
        """Stage the deletion of an entity."""
        self.session.delete(entity)
