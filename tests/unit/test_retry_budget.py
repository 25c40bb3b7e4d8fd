"""The retry budget: runners on one store share it; a retry it cannot pay waits, or gives up."""

from __future__ import annotations

import pytest

from adapters.memory import SimulatedError
from tests.unit.conftest import FakeClock, backend_of, clocked_runner, create_task, make_runner
from uow import Reason, RetryBudget, RetryBudgetPolicy, RetryPolicy, Runner, retry_details
from uow.testing import Fault, inject, set_testing

ONE_RETRY = RetryPolicy(retry_budget={"ratio": 0, "min_per_second": 0.1, "ttl": 10})
"""A reserve of exactly one retry, and no deposits."""


def test_a_fake_clock_can_measure_the_budget(clock: FakeClock) -> None:
    """A clock that is not hashable (a dataclass) still works; one store's runners share it."""
    runner = clocked_runner(clock)
    other: Runner[object] = Runner(runner.backend, clock=clock, sleep=clock.sleep)
    assert runner.retry_budget is not None
    assert other.retry_budget is runner.retry_budget
    assert runner.using(idempotent=True).retry_budget is runner.retry_budget
    assert clocked_runner(FakeClock()).retry_budget is not runner.retry_budget


def test_a_retry_the_budget_cannot_pay_waits_for_it(clock: FakeClock) -> None:
    """The reserve pays one failing retry; the next waits until that withdrawal expires."""
    runner = clocked_runner(clock, ONE_RETRY)
    started = clock.now
    with inject(Fault.disconnect(at=1, times=2)):
        runner.run(create_task, "paid once the first withdrawal expired")
    assert backend_of(runner).attempts == 3  # no attempt was made while it waited
    assert clock.now - started >= 10  # the failed retry's withdrawal counted for ttl=10 s
    budget = runner.retry_budget
    assert budget is not None
    assert (budget.withdrawals, budget.refunds) == (2, 1)
    assert budget.refusals >= 1


def test_a_retry_that_succeeds_gives_its_withdrawal_back(clock: FakeClock) -> None:
    """Only failing retries are capped: a retry that commits leaves the budget as it was."""
    runner = clocked_runner(clock, ONE_RETRY)
    for name in ("first", "second", "third"):
        with inject(Fault.disconnect(at=1)):
            runner.run(create_task, name)
    assert backend_of(runner).attempts == 6
    budget = runner.retry_budget
    assert budget is not None
    assert (budget.withdrawals, budget.refunds, budget.refusals) == (3, 3, 0)


def test_a_retry_the_budget_cannot_pay_in_time_gives_up(clock: FakeClock) -> None:
    """When the budget stays empty past the time budget: RETRY_BUDGET_EXHAUSTED, no attempt."""
    runner = clocked_runner(clock, ONE_RETRY.override(timeout=5))
    with pytest.raises(SimulatedError) as excinfo, inject(Fault.disconnect(at=1, times=3)):
        runner.run(create_task, "refused")
    details = retry_details(excinfo.value)
    assert details is not None
    assert (details.attempt, details.will_retry) == (2, False)
    assert details.reason == Reason.RETRY_BUDGET_EXHAUSTED == "retry budget exhausted"  # type: ignore[comparison-overlap]  # a StrEnum equals its value
    assert backend_of(runner).attempts == 2


def test_in_testing_mode_a_refused_retry_gives_up_at_once() -> None:
    """Testing mode skips waits, so an empty budget ends the operation at once."""
    runner = make_runner(ONE_RETRY)
    with (
        set_testing(True),
        pytest.raises(SimulatedError) as excinfo,
        inject(Fault.disconnect(at=1, times=3)),
    ):
        runner.run(create_task, "refused")
    assert retry_details(excinfo.value).reason == Reason.RETRY_BUDGET_EXHAUSTED  # type: ignore[union-attr]
    assert backend_of(runner).attempts == 2


def test_no_budget_when_the_policy_has_none(clock: FakeClock) -> None:
    """retry_budget=None leaves each operation bounded by its own policy only."""
    runner = clocked_runner(clock, ONE_RETRY.override(retry_budget=None))
    assert runner.retry_budget is None
    with inject(Fault.disconnect(at=1, times=3)):
        runner.run(create_task, "x")
    assert backend_of(runner).attempts == 4


def test_once_a_burst_spent_the_reserve_the_floor_still_pays_its_rate(clock: FakeClock) -> None:
    """A burst spends the reserve; then ``min_per_second`` retries a second still get through.

    Without the floor, nothing would be paid until the burst's withdrawals expired (ttl),
    and closed-loop workers waiting on the budget make no deposits meanwhile.
    """
    budget = RetryBudget(RetryBudgetPolicy(ratio=0, min_per_second=2, ttl=30), clock)
    assert sum(budget.withdraw() for _ in range(100)) == 60  # the reserve: 2 a second x 30 s
    clock.advance(1.0)
    assert not budget.withdraw()  # the burst left one second of debt on the floor
    clock.advance(0.5)
    assert budget.withdraw()
    assert not budget.withdraw()
    paid = 0
    for _ in range(100):  # 10 s, asked every 0.1 s
        clock.advance(0.1)
        paid += budget.withdraw()
    assert paid == 20  # 2 a second, not more
    assert budget.balance() < 1  # the burst's withdrawals still count


def test_a_refund_of_a_floor_paid_retry_pays_the_next_one(clock: FakeClock) -> None:
    """When a retry the floor paid for succeeds, the next waiting retry goes out at once."""
    budget = RetryBudget(RetryBudgetPolicy(ratio=0, min_per_second=1, ttl=10), clock)
    assert sum(budget.withdraw() for _ in range(20)) == 10
    clock.advance(3.0)
    assert budget.withdraw()  # the floor
    assert not budget.withdraw()
    budget.refund()  # it succeeded: the database answers again
    assert budget.withdraw()
    budget.refund()
    assert budget.withdraw()
