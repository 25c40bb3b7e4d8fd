"""Whole operations: what they return, reruns after faults, events, lost COMMITs, the unit's end."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from sqlalchemy.exc import PendingRollbackError

from tests.contract.model import (
    Order,
    OrderPlaced,
    Shop,
    StockItem,
    orders_by_reference,
    place_order,
    stock_skus,
)
from uow import UnitOfWorkClosedError
from uow.testing import Fault, inject, set_testing

if TYPE_CHECKING:
    from tests.contract.targets import Target

pytestmark = pytest.mark.contract


def test_what_an_operation_returns_is_detached_and_readable(target: Target) -> None:
    """The result stays readable after the operation; changing it changes nothing stored."""
    units = target.units()
    order = units.run(place_order, "A-1", 2)
    assert (order.reference, order.quantity) == ("A-1", 2)
    order.quantity = 99
    assert units.run(orders_by_reference) == {"A-1": 2}
    again = units.run(lambda uow: uow.orders.by_reference("A-1"))
    assert again is not None
    assert again is not order
    assert again.quantity == 2


@pytest.mark.parametrize("at", [1, 2, 3], ids=["autoflush", "query", "insert"])
def test_a_failed_attempt_leaves_no_trace_and_the_rerun_commits_once(
    target: Target, at: int
) -> None:
    """A lost connection at a statement rolls the attempt back; the rerun commits exactly once."""
    calls: list[int] = []

    def place(uow: Shop) -> Order:
        calls.append(1)
        uow.stock.add(StockItem(f"S-{len(calls)}", 1))  # statement 1: the query's autoflush
        return place_order(uow, "A-1")  # statements 2 (the query) and 3 (the INSERT)

    units = target.units()
    with set_testing(True), inject(Fault.disconnect(at=at)) as injection:
        order = units.run(place)
    assert len(injection.fired) == 1
    assert len(calls) == 2
    assert order.id is not None
    assert units.run(orders_by_reference) == {"A-1": 1}
    assert units.run(stock_skus) == ["S-2"]


def test_a_caught_lost_connection_does_not_save_the_attempt(target: Target) -> None:
    """The connection's transaction is gone: the next statement fails, and the operation reruns."""
    units = target.units()
    seen: list[str] = []

    def read_twice(uow: Shop) -> int:
        try:
            uow.orders.all()  # statement 1: the connection is lost on the first attempt
        except Exception:  # each adapter raises its own driver's error
            seen.append("lost")
        try:
            return len(uow.orders.all())
        except PendingRollbackError:
            seen.append("unusable")
            raise

    with set_testing(True), inject(Fault.disconnect(at=1)):
        assert units.run(read_twice) == 0
    assert seen == ["lost", "unusable"]


def test_events_are_published_once_after_the_commit(target: Target) -> None:
    """An attempt that failed publishes nothing; the one that committed publishes once."""
    published: list[object] = []
    units = target.units(event_handlers={OrderPlaced: [published.append]})

    def place(uow: Shop) -> Order:
        order = place_order(uow, "A-1")
        assert published == []  # not before the commit
        uow.orders.all()  # statement 3: lost on the first attempt
        return order

    with set_testing(True), inject(Fault.disconnect(at=3)):
        units.run(place)
    assert published == [OrderPlaced("A-1")]


@pytest.mark.parametrize("applied", [True, False], ids=["applied", "not-applied"])
def test_a_lost_commit_is_resolved_by_the_commit_markers(target: Target, applied: bool) -> None:
    """Applied: the result comes back, no rerun. Not applied: one rerun. One order either way."""
    calls: list[int] = []
    published: list[object] = []
    units = target.units(commit_markers=True, event_handlers={OrderPlaced: [published.append]})

    def place(uow: Shop) -> Order:
        calls.append(1)
        return place_order(uow, "A-1")

    with set_testing(True), inject(Fault.lost_commit(committed=applied)):
        order = units.run(place)
    assert order.reference == "A-1"
    assert len(calls) == (1 if applied else 2)
    assert units.run(orders_by_reference) == {"A-1": 1}
    assert published == [OrderPlaced("A-1")]


def test_a_lost_commit_of_a_read_only_operation_is_rerun(target: Target) -> None:
    """Without commit markers: an attempt that wrote nothing has nothing to lose, so it reruns."""
    units = target.units()
    units.run(place_order, "A-1")
    calls: list[int] = []

    def count(uow: Shop) -> int:
        calls.append(1)
        order = uow.orders.by_reference("A-1")
        assert order is not None
        return len(uow.orders.all())

    with set_testing(True), inject(Fault.lost_commit(committed=False)):
        assert units.run(count) == 1
    assert len(calls) == 2


def test_the_unit_of_work_is_unusable_after_the_operation(target: Target) -> None:
    """Kept beyond its operation, the unit of work refuses everything."""
    units = target.units()
    kept = units.run(lambda uow: uow)
    assert not kept.active
    with pytest.raises(UnitOfWorkClosedError):
        kept.orders.all()
    with pytest.raises(UnitOfWorkClosedError):
        kept.orders.add(Order("A-1"))
    with pytest.raises(UnitOfWorkClosedError):
        kept.flush()
    with pytest.raises(UnitOfWorkClosedError):
        kept.record_event(OrderPlaced("A-1"))
    assert units.run(orders_by_reference) == {}


def test_a_repository_kept_beyond_its_operation_is_unusable(target: Target) -> None:
    """A repository is the attempt's too: after the operation it refuses reads and writes."""
    units = target.units()
    orders = units.run(lambda uow: uow.orders)
    with pytest.raises(UnitOfWorkClosedError):
        orders.get(1)
    with pytest.raises(UnitOfWorkClosedError):
        orders.add(Order("A-1"))
