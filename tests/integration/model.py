"""The small domain the integration tests write: tasks with unique names, and counters."""

from __future__ import annotations

from sqlalchemy import String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from adapters.sqlalchemy import SqlAlchemyRepository


class Base(DeclarativeBase):
    pass


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)


class Counter(Base):
    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(default=0)


class TaskRepository(SqlAlchemyRepository[Task]):
    model = Task

    def by_name(self, name: str) -> Task | None:
        return self.session.scalars(select(Task).where(Task.name == name)).first()


class CounterRepository(SqlAlchemyRepository[Counter]):
    model = Counter

    def locked(self, name: str) -> Counter:
        """The counter, read with ``SELECT ... FOR UPDATE`` (an exclusive row lock)."""
        query = select(Counter).where(Counter.name == name).with_for_update()
        return self.session.scalars(query).one()


REPOSITORIES = {"tasks": TaskRepository, "counters": CounterRepository}
