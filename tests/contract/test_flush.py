"""Ids, flushes and the identity map: what an operation sees of its own writes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.contract.model import Order, Shop, StockItem, add_orders, orders_by_reference
from uow.testing import inject

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.contract.targets import Target

pytestmark = pytest.mark.contract

FLUSHES: dict[str, Callable[[Shop], object]] = {
    "flush": lambda uow: uow.flush(),
    "all": lambda uow: uow.orders.all(),
    "query": lambda uow: uow.orders.by_reference("elsewhere"),
    "other-table": lambda uow: uow.stock.all(),
    "get-missing": lambda uow: uow.orders.get(999),
}


@pytest.mark.parametrize("flush", FLUSHES.values(), ids=FLUSHES.keys())
def test_an_added_entity_gets_its_id_at_the_flush(
    target: Target, flush: Callable[[Shop], object]
) -> None:
    """add() only stages; uow.flush() or any read through a repository writes it, with an id."""

    def place(uow: Shop) -> tuple[int | None, int | None]:
        order = uow.orders.add(Order("A-1"))
        before = order.id
        flush(uow)
        return before, order.id

    before, after = target.units().run(place)
    assert before is None
    assert after is not None


def test_an_entity_only_added_has_its_id_when_the_operation_returns(target: Target) -> None:
    """What is still pending is written at the commit; the caller sees the id."""
    units = target.units()
    seen: list[int | None] = []

    def place(uow: Shop) -> Order:
        order = uow.orders.add(Order("A-1"))
        seen.append(order.id)
        return order

    order = units.run(place)
    assert seen == [None]
    assert order.id is not None
    assert units.run(lambda uow: uow.orders.get(order.id)) is not None


def test_ids_are_distinct_and_increasing(target: Target) -> None:
    """Ids follow the order of the additions, within an operation and across operations."""
    units = target.units()
    first = [order.id for order in units.run(add_orders, "A-1", "A-2", "A-3")]
    second = [order.id for order in units.run(add_orders, "A-4", "A-5")]
    ids = [ident for ident in first + second if ident is not None]
    assert len(ids) == 5
    assert ids == sorted(set(ids))


def test_an_explicit_id_moves_the_sequence_past_it(target: Target) -> None:
    """After a row inserted with id 50, the next generated id is 51 (the sequence never clashes)."""
    units = target.units()
    units.run(lambda uow: uow.orders.add(Order("A-1", id=50)))
    order = units.run(lambda uow: uow.orders.add(Order("A-2")))
    assert order.id == 51


def test_get_returns_the_same_object_within_an_attempt(target: Target) -> None:
    """An entity read or written in an attempt is that very object on every later read."""
    units = target.units()
    stored = units.run(lambda uow: uow.orders.add(Order("A-1")))

    def read_twice(uow: Shop) -> bool:
        added = uow.orders.add(Order("A-2"))
        uow.flush()
        first = uow.orders.get(stored.id)
        in_all = {order.reference: order for order in uow.orders.all()}
        by_query = uow.orders.by_reference("A-1")
        return (
            first is not None
            and first is uow.orders.get(stored.id) is in_all["A-1"] is by_query
            and uow.orders.get(added.id) is added is in_all["A-2"]
        )

    assert units.run(read_twice) is True


def test_get_of_a_loaded_entity_does_not_flush(target: Target) -> None:
    """get() serves what the attempt already holds: pending additions stay pending."""
    units = target.units()
    stored = units.run(lambda uow: uow.orders.add(Order("A-1")))

    def read(uow: Shop) -> tuple[int | None, int | None]:
        loaded = uow.orders.get(stored.id)  # read: nothing pending yet
        assert loaded is not None
        pending = uow.orders.add(Order("A-2"))
        again = uow.orders.get(stored.id)
        assert again is loaded
        before = pending.id
        uow.flush()
        return before, pending.id

    before, after = units.run(read)
    assert before is None
    assert after is not None


def test_removal_is_seen_after_the_flush(target: Target) -> None:
    """A removed entity stays in the identity map until the flush; then get() finds nothing."""
    units = target.units()
    stored = units.run(lambda uow: uow.orders.add(Order("A-1")))

    def remove(uow: Shop) -> tuple[bool, bool, list[str]]:
        order = uow.orders.get(stored.id)
        assert order is not None
        uow.orders.remove(order)
        still_there = uow.orders.get(stored.id) is order
        uow.flush()
        gone = uow.orders.get(stored.id) is None
        return still_there, gone, [o.reference for o in uow.orders.all()]

    assert units.run(remove) == (True, True, [])
    assert units.run(orders_by_reference) == {}


def test_all_sees_pending_changes(target: Target) -> None:
    """all() flushes first: it lists pending additions and leaves pending removals out."""
    units = target.units()
    stored = units.run(add_orders, "A-1", "A-2")

    def change(uow: Shop) -> list[str]:
        uow.orders.add(Order("A-3"))
        removed = uow.orders.get(stored[0].id)
        assert removed is not None
        uow.orders.remove(removed)
        return sorted(order.reference for order in uow.orders.all())

    assert units.run(change) == ["A-2", "A-3"]


def test_changed_attributes_are_written_by_the_flush(target: Target) -> None:
    """Changing a loaded entity is enough: the next flush writes it, a query sees it."""
    units = target.units()
    stored = units.run(lambda uow: uow.orders.add(Order("A-1", quantity=1)))

    def change(uow: Shop) -> int | None:
        order = uow.orders.get(stored.id)
        assert order is not None
        order.quantity = 5
        order.reference = "A-1b"
        found = uow.orders.by_reference("A-1b")
        return None if found is None else found.quantity

    assert units.run(change) == 5
    assert units.run(orders_by_reference) == {"A-1b": 5}


def test_column_defaults_are_given_at_the_flush(target: Target) -> None:
    """A column left unset gets its default when the INSERT is written, not before."""

    def add(uow: Shop) -> tuple[int | None, int | None]:
        item = uow.stock.add(StockItem("S-1"))
        before = item.quantity
        uow.flush()
        return before, item.quantity

    assert target.units().run(add) == (None, 0)


def test_repositories_share_one_flush(target: Target) -> None:
    """A flush writes the pending entities of every repository, each table numbered alone."""
    units = target.units()

    def add_both(uow: Shop) -> tuple[int | None, int | None]:
        item = uow.stock.add(StockItem("S-1", 3))
        order = uow.orders.add(Order("A-1"))
        uow.flush()
        return item.id, order.id

    assert units.run(add_both) == (1, 1)


def test_statements_are_counted_where_faults_strike(target: Target) -> None:
    """A read is a statement, a get from the identity map none; a table's writes one per kind."""
    units = target.units()
    stored = units.run(lambda uow: uow.orders.add(Order("A-1")))

    def work(uow: Shop) -> int:
        order = uow.orders.get(stored.id)  # 1: SELECT
        assert order is not None
        assert order is uow.orders.get(stored.id)  # the identity map: no statement
        order.quantity = 3
        uow.orders.add(Order("A-2"))
        uow.stock.add(StockItem("S-1"))
        uow.flush()  # 2, 3, 4: UPDATE and INSERT of orders, INSERT of stock
        uow.orders.remove(order)
        return len(uow.orders.all())  # 5, 6: DELETE, SELECT

    with inject() as injection:
        assert units.run(work) == 1
    assert injection.statements(work.__qualname__) == 6
