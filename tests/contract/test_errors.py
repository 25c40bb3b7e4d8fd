"""Unique keys and what an error does to the attempt: rolled back whole, or to a savepoint."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, cast

import pytest
from sqlalchemy.exc import IntegrityError, InvalidRequestError, PendingRollbackError

from tests.contract.model import Order, Shop, StockItem, orders_by_reference, stock_skus
from uow import ErrorKind, retry_details
from uow.testing import inject, set_testing

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.contract.targets import Target

pytestmark = pytest.mark.contract


def test_a_duplicate_in_one_flush_raises_integrity_error_at_the_flush(target: Target) -> None:
    """Two orders with one reference: IntegrityError at the flush, not at add; nothing committed."""
    units = target.units()
    reached: list[str] = []

    def place_twice(uow: Shop) -> None:
        uow.stock.add(StockItem("S-1", 1))
        uow.orders.add(Order("A-1"))
        uow.orders.add(Order("A-1"))
        reached.append("added")
        uow.flush()
        reached.append("flushed")

    with set_testing(True), pytest.raises(IntegrityError) as excinfo:
        units.run(place_twice)
    assert reached == ["added"]  # one attempt: a duplicate key is not retried
    details = retry_details(excinfo.value)
    assert details is not None
    assert (details.attempt, details.kind) == (1, ErrorKind.PERMANENT)
    assert units.run(orders_by_reference) == {}
    assert units.run(stock_skus) == []


def test_a_duplicate_of_a_stored_row_raises_at_the_end_of_the_operation(target: Target) -> None:
    """A clash with a stored row is found by the flush before COMMIT: nothing of it is committed."""
    units = target.units()
    units.run(lambda uow: uow.orders.add(Order("A-1", quantity=1)))
    calls: list[int] = []

    def place_again(uow: Shop) -> None:
        calls.append(1)
        uow.stock.add(StockItem("S-1", 1))
        uow.orders.add(Order("A-1", quantity=2))

    with set_testing(True), pytest.raises(IntegrityError):
        units.run(place_again)
    assert calls == [1]
    assert units.run(orders_by_reference) == {"A-1": 1}
    assert units.run(stock_skus) == []


def test_a_change_to_a_taken_value_raises_integrity_error(target: Target) -> None:
    """Updating a loaded entity to another row's unique value fails at the next flush."""
    units = target.units()
    units.run(lambda uow: [uow.orders.add(Order("A-1")), uow.orders.add(Order("A-2"))])

    def rename(uow: Shop) -> None:
        order = uow.orders.by_reference("A-2")
        assert order is not None
        order.reference = "A-1"
        uow.orders.all()

    with pytest.raises(IntegrityError):
        units.run(rename)
    assert sorted(units.run(orders_by_reference)) == ["A-1", "A-2"]


def test_unique_columns_hold_many_nulls(target: Target) -> None:
    """Orders without an invoice number do not clash; two with the same one do."""
    units = target.units()

    def invoice(uow: Shop, *numbers: str | None) -> None:
        for index, number in enumerate(numbers):
            order = uow.orders.add(Order(f"A-{index}"))
            order.invoice = number
        uow.flush()

    units.run(invoice, None, None, "F-1")
    with pytest.raises(IntegrityError):
        units.run(invoice, "F-2", "F-2")


def test_a_null_in_a_not_null_column_raises_integrity_error(target: Target) -> None:
    """An order without a reference cannot be written."""
    with pytest.raises(IntegrityError):
        target.units().run(lambda uow: uow.orders.add(Order(cast("str", None))))


def test_a_caught_integrity_error_leaves_the_attempt_unusable(target: Target) -> None:
    """Without a savepoint, catching the error does not undo it: the attempt can only fail."""
    units = target.units()
    units.run(lambda uow: uow.orders.add(Order("A-1")))

    def insert_or_ignore(uow: Shop) -> str:
        uow.stock.add(StockItem("S-1", 1))
        uow.flush()
        uow.orders.add(Order("A-1"))
        with contextlib.suppress(IntegrityError):
            uow.flush()
        uow.orders.all()
        return "carried on"

    with pytest.raises(PendingRollbackError):
        units.run(insert_or_ignore)
    assert units.run(stock_skus) == []


def test_a_caught_integrity_error_cannot_commit_either(target: Target) -> None:
    """Returning normally after catching it fails too, at the end of the operation."""
    units = target.units()
    units.run(lambda uow: uow.orders.add(Order("A-1")))

    def insert_or_ignore(uow: Shop) -> str:
        uow.stock.add(StockItem("S-1", 1))
        uow.orders.add(Order("A-1"))
        try:
            uow.flush()
        except IntegrityError:
            return "ignored"
        return "inserted"

    with pytest.raises(PendingRollbackError):
        units.run(insert_or_ignore)
    assert units.run(stock_skus) == []


def claim(uow: Shop, reference: str) -> tuple[bool, int]:
    """Get-or-create with a savepoint: the rest of the attempt survives a taken reference."""
    item = uow.stock.add(StockItem("S-1", 1))
    uow.flush()
    try:
        with uow.begin_nested():
            item.quantity = 7
            uow.stock.add(StockItem("S-2", 1))
            uow.orders.add(Order(reference))
    except IntegrityError:
        return False, item.quantity
    return True, item.quantity


def test_a_savepoint_contains_an_integrity_error(target: Target) -> None:
    """Caught around a savepoint, the error undoes only the savepoint's work; the rest commits."""
    units = target.units()
    units.run(lambda uow: uow.orders.add(Order("A-1")))
    assert units.run(claim, "A-1") == (False, 1)  # the change made inside is undone too
    assert units.run(stock_skus) == ["S-1"]
    assert units.run(orders_by_reference) == {"A-1": 1}


def test_a_savepoint_that_succeeds_keeps_its_work(target: Target) -> None:
    """Leaving the savepoint's block normally keeps everything done inside it."""
    units = target.units()
    assert units.run(claim, "A-1") == (True, 7)
    assert units.run(stock_skus) == ["S-1", "S-2"]
    assert units.run(orders_by_reference) == {"A-1": 1}


def test_an_error_in_a_savepoint_undoes_its_reads_and_removals(target: Target) -> None:
    """Any exception leaving the block rolls back to the savepoint: removed rows come back."""
    units = target.units()
    stored = units.run(lambda uow: uow.orders.add(Order("A-1", quantity=1)))

    def try_cancel(uow: Shop) -> tuple[int, bool]:
        order = uow.orders.get(stored.id)
        assert order is not None
        with contextlib.suppress(LookupError), uow.begin_nested():
            order.quantity = 0
            uow.orders.remove(order)
            uow.flush()
            raise LookupError
        return order.quantity, uow.orders.get(stored.id) is order

    assert units.run(try_cancel) == (1, True)
    assert units.run(orders_by_reference) == {"A-1": 1}


def test_savepoint_statements_are_sent_only_when_needed(target: Target) -> None:
    """SAVEPOINT goes with the block's first statement; RELEASE or ROLLBACK TO only after it."""
    units = target.units()

    def work(uow: Shop) -> int:
        uow.stock.add(StockItem("S-1"))
        with uow.begin_nested():  # 1: the INSERT it flushes first
            uow.orders.add(Order("A-1"))
        # 2, 3, 4: SAVEPOINT, the INSERT, RELEASE SAVEPOINT
        with contextlib.suppress(IntegrityError), uow.begin_nested():
            uow.orders.add(Order("A-1"))
        # 5, 6, 7: SAVEPOINT, the INSERT that fails, ROLLBACK TO SAVEPOINT
        with uow.begin_nested():
            pass  # nothing sent
        return len(uow.orders.all())  # 8

    with inject() as injection:
        assert units.run(work) == 1
    assert injection.statements(work.__qualname__) == 8


REMOVALS: dict[str, Callable[[Shop], None]] = {
    "pending": lambda uow: uow.orders.remove(uow.orders.add(Order("A-1"))),
    "new": lambda uow: uow.orders.remove(Order("A-1")),
}


@pytest.mark.parametrize("remove", REMOVALS.values(), ids=REMOVALS.keys())
def test_removing_what_was_never_written_is_refused(
    target: Target, remove: Callable[[Shop], None]
) -> None:
    """remove() of an entity that is not stored raises InvalidRequestError at once."""
    with pytest.raises(InvalidRequestError, match="not persisted"):
        target.units().run(remove)
