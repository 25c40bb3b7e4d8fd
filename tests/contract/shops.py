"""The `Shop` of each adapter: repositories and typed units of work, sync and async.

The async units are driven by the same operations through `SyncShop`, a view that makes
each awaited call of the async unit of work in SQLAlchemy's greenlet bridge (the way
``AsyncSession.run_sync`` runs sync code): the operation is plain code, every call it
makes is awaited on the event loop by the async adapter.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, contextmanager
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from sqlalchemy import select
from sqlalchemy.util.concurrency import await_only, in_greenlet

from adapters.memory import (
    AsyncInMemoryRepository,
    AsyncInMemoryUnitOfWork,
    InMemoryRepository,
    InMemoryUnitOfWork,
)
from adapters.sqlalchemy import (
    AsyncSqlAlchemyRepository,
    AsyncSqlAlchemyUnitOfWork,
    SqlAlchemyRepository,
    SqlAlchemyUnitOfWork,
    repository,
)
from tests.contract.model import Order, StockItem

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Awaitable, Iterator, Sequence

    from uow import Repository

T = TypeVar("T")


# --- in memory ------------------------------------------------------------------------------


class MemoryOrders(InMemoryRepository[Order]):
    unique = ("reference", "invoice")

    def by_reference(self, reference: str) -> Order | None:
        return next((order for order in self.all() if order.reference == reference), None)


class MemoryStock(InMemoryRepository[StockItem]):
    pass


class MemoryShop(InMemoryUnitOfWork):
    orders = repository(MemoryOrders)
    stock = repository(MemoryStock)


# --- SQLAlchemy -----------------------------------------------------------------------------


class SqlOrders(SqlAlchemyRepository[Order]):
    model = Order

    def by_reference(self, reference: str) -> Order | None:
        return self.session.scalars(select(Order).where(Order.reference == reference)).first()


class SqlStock(SqlAlchemyRepository[StockItem]):
    model = StockItem


class SqlShop(SqlAlchemyUnitOfWork):
    orders = repository(SqlOrders)
    stock = repository(SqlStock)


# --- async ----------------------------------------------------------------------------------


class AsyncMemoryOrders(AsyncInMemoryRepository[Order]):
    unique = ("reference", "invoice")

    async def by_reference(self, reference: str) -> Order | None:
        return next((order for order in await self.all() if order.reference == reference), None)


class AsyncMemoryStock(AsyncInMemoryRepository[StockItem]):
    pass


class AsyncMemoryShop(AsyncInMemoryUnitOfWork):
    orders = repository(AsyncMemoryOrders)
    stock = repository(AsyncMemoryStock)


class AsyncSqlOrders(AsyncSqlAlchemyRepository[Order]):
    model = Order

    async def by_reference(self, reference: str) -> Order | None:
        found = await self.session.scalars(select(Order).where(Order.reference == reference))
        return found.first()


class AsyncSqlStock(AsyncSqlAlchemyRepository[StockItem]):
    model = StockItem


class AsyncSqlShop(AsyncSqlAlchemyUnitOfWork):
    orders = repository(AsyncSqlOrders)
    stock = repository(AsyncSqlStock)


class AsyncRepository(Protocol[T]):
    def add(self, entity: T) -> T: ...
    async def get(self, ident: Any) -> T | None: ...
    async def all(self) -> Sequence[T]: ...
    async def remove(self, entity: T) -> None: ...


class AsyncOrders(AsyncRepository[Order], Protocol):
    async def by_reference(self, reference: str) -> Order | None: ...


class AsyncShop(Protocol):
    """What both async units of work offer: `Shop` with awaited calls."""

    @property
    def orders(self) -> AsyncOrders: ...
    @property
    def stock(self) -> AsyncRepository[StockItem]: ...
    @property
    def active(self) -> bool: ...
    def record_event(self, event: object) -> None: ...
    async def flush(self) -> None: ...
    def begin_nested(self) -> AbstractAsyncContextManager[object]: ...


class Bridge:
    """Awaits for sync code: in the greenlet of an operation, or else on the test's loop."""

    def __init__(self, loop: asyncio.Runner) -> None:
        self.loop = loop

    def wait(self, awaitable: Awaitable[T]) -> T:
        if in_greenlet():
            return await_only(awaitable)
        return self.loop.run(_awaited(awaitable))  # after the operation: the closed-unit checks


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


class SyncRepository(Generic[T]):
    def __init__(self, repository: AsyncRepository[T], bridge: Bridge) -> None:
        self._repository = repository
        self._bridge = bridge

    def add(self, entity: T) -> T:
        return self._repository.add(entity)

    def get(self, ident: Any) -> T | None:
        return self._bridge.wait(self._repository.get(ident))

    def all(self) -> Sequence[T]:
        return self._bridge.wait(self._repository.all())

    def remove(self, entity: T) -> None:
        self._bridge.wait(self._repository.remove(entity))


class SyncOrders(SyncRepository[Order]):
    def __init__(self, repository: AsyncOrders, bridge: Bridge) -> None:
        super().__init__(repository, bridge)
        self._orders = repository

    def by_reference(self, reference: str) -> Order | None:
        return self._bridge.wait(self._orders.by_reference(reference))


class SyncShop:
    """An async unit of work seen as a `Shop`; each call is awaited through the bridge."""

    def __init__(self, unit: AsyncShop, bridge: Bridge) -> None:
        self._unit = unit
        self._bridge = bridge

    @property
    def orders(self) -> SyncOrders:
        return SyncOrders(self._unit.orders, self._bridge)

    @property
    def stock(self) -> Repository[StockItem]:
        return SyncRepository(self._unit.stock, self._bridge)

    @property
    def active(self) -> bool:
        return self._unit.active

    def record_event(self, event: object) -> None:
        self._unit.record_event(event)

    def flush(self) -> None:
        self._bridge.wait(self._unit.flush())

    @contextmanager
    def begin_nested(self) -> Iterator[None]:
        savepoint = self._unit.begin_nested()
        self._bridge.wait(savepoint.__aenter__())
        try:
            yield
        except BaseException as error:
            if not self._bridge.wait(savepoint.__aexit__(type(error), error, error.__traceback__)):
                raise
        else:
            self._bridge.wait(savepoint.__aexit__(None, None, None))
