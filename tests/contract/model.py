"""The domain every contract test works on: orders with a unique reference, and stock items.

The entities are SQLAlchemy-mapped classes, as in most applications; the in-memory
adapter stores the very same classes. Services are typed against `Shop`, a protocol
that the in-memory and the SQLAlchemy units of work both satisfy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from uow import Repository, UnitOfWork

if TYPE_CHECKING:
    from contextlib import AbstractContextManager


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "contract_orders"

    id: Mapped[int | None] = mapped_column(primary_key=True, nullable=False)
    """``None`` until the flush writes the order."""
    reference: Mapped[str] = mapped_column(String(32), unique=True)
    quantity: Mapped[int]
    invoice: Mapped[str | None] = mapped_column(String(32), unique=True)
    """Unique once set; many orders have none yet."""

    def __init__(self, reference: str, quantity: int = 1, *, id: int | None = None) -> None:  # noqa: A002
        super().__init__(id=id, reference=reference, quantity=quantity, invoice=None)


class StockItem(Base):
    __tablename__ = "contract_stock"

    id: Mapped[int | None] = mapped_column(primary_key=True, nullable=False)
    sku: Mapped[str] = mapped_column(String(32))
    quantity: Mapped[int] = mapped_column(default=0)
    """Given by the INSERT when the item is added without one."""

    def __init__(self, sku: str, quantity: int | None = None) -> None:
        super().__init__(sku=sku, **({} if quantity is None else {"quantity": quantity}))


@dataclass(frozen=True)
class OrderPlaced:
    """The domain event of `place_order`."""

    reference: str


class Orders(Repository[Order], Protocol):
    """The orders port: the collection, and one query."""

    def by_reference(self, reference: str) -> Order | None: ...


class Shop(UnitOfWork, Protocol):
    """What the services need of a unit of work, whatever the adapter."""

    @property
    def orders(self) -> Orders: ...
    @property
    def stock(self) -> Repository[StockItem]: ...
    def flush(self) -> None: ...
    def begin_nested(self) -> AbstractContextManager[object]: ...


def place_order(uow: Shop, reference: str, quantity: int = 1) -> Order:
    """Refuse a taken reference, add the order, and announce it once it is committed."""
    if uow.orders.by_reference(reference) is not None:  # statement 1
        msg = f"order {reference} exists"
        raise ValueError(msg)
    order = uow.orders.add(Order(reference, quantity))
    uow.flush()  # statement 2: the INSERT
    uow.record_event(OrderPlaced(reference))
    return order


def add_orders(uow: Shop, *references: str) -> list[Order]:
    """Add orders without reading first; written at the end of the operation."""
    return [uow.orders.add(Order(reference)) for reference in references]


def orders_by_reference(uow: Shop) -> dict[str, int]:
    """What is stored: each order's quantity by reference."""
    return {order.reference: order.quantity for order in uow.orders.all()}


def stock_skus(uow: Shop) -> list[str]:
    return sorted(item.sku for item in uow.stock.all())
