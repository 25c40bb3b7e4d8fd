"""The mapped class, repository and operations every case runs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import String, insert
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from adapters.sqlalchemy import SqlAlchemyRepository

SEED_ROWS = 100
"""Rows present before any case runs; reads by primary key cycle over their ids."""


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "bench_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40))
    qty: Mapped[int]


class ItemRepository(SqlAlchemyRepository[Item]):
    model = Item


REPOSITORIES = {"items": ItemRepository}
INSERT_ITEM = insert(Item)
RAW_INSERT = "INSERT INTO bench_items (name, qty) VALUES (%s, %s)"


def write_one(uow: Any) -> None:
    uow.items.add(Item(name="one", qty=1))


def write_ten(uow: Any) -> None:
    for qty in range(10):
        uow.items.add(Item(name="ten", qty=qty))


def read_one(uow: Any, ident: int) -> int:
    item: Item | None = uow.items.get(ident)
    if item is None:
        raise LookupError(f"no item {ident}")
    return item.qty


def bump_one(uow: Any) -> None:
    """Read a row by primary key and change it: no data grows, whatever the count."""
    item = uow.items.get(1)
    if item is None:
        raise LookupError("no item 1")
    item.qty += 1


def reset_schema(engine: Any) -> None:
    """Drop and create the benchmark table, then insert the seed rows (ids 1..SEED_ROWS)."""
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(INSERT_ITEM, [{"name": f"seed-{n}", "qty": n} for n in range(SEED_ROWS)])


def drop_schema(engine: Any) -> None:
    Base.metadata.drop_all(engine)
