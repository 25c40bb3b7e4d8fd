"""The retry budget: runners on one store share it; a retry it cannot pay is not made."""

from __future__ import annotations

import pytest

from adapters.memory import SimulatedError
from tests.unit.conftest import FakeClock, backend_of, clocked_runner, create_task
from uow import Reason, RetryPolicy, Runner, retry_details
from uow.testing import Fault, inject

ONE_RETRY = RetryPolicy(retry_budget={"ratio": 0, "min_per_second": 0.1, "ttl": 10})  # type: ignore[arg-type]
"""A reserve of exactly one retry, and no deposits."""


def test_a_fake_clock_can_measure_the_budget(clock: FakeClock) -> None:
    """A clock that is not hashable (a dataclass) still works; one store's runners share it."""
    runner = clocked_runner(clock)
    other: Runner[object] = Runner(runner.backend, clock=clock, sleep=clock.sleep)
    assert runner.retry_budget is not None
    assert other.retry_budget is runner.retry_budget
    assert runner.using(idempotent=True).retry_budget is runner.retry_budget
    assert clocked_runner(FakeClock()).retry_budget is not runner.retry_budget


def test_a_retry_the_budget_cannot_pay_gives_up_at_once(clock: FakeClock) -> None:
    """Once the reserve is spent, the next failure ends its operation: RETRY_BUDGET_EXHAUSTED."""
    runner = clocked_runner(clock, ONE_RETRY)
    with inject(Fault.disconnect(at=1)):
        runner.run(create_task, "paid by the reserve")
    with pytest.raises(SimulatedError) as excinfo, inject(Fault.disconnect(at=1)):
        runner.run(create_task, "refused")
    details = retry_details(excinfo.value)
    assert details is not None
    assert (details.attempt, details.reason) == (1, Reason.RETRY_BUDGET_EXHAUSTED)
    assert details.reason == "retry budget exhausted"
    assert backend_of(runner).attempts == 3
    budget = runner.retry_budget
    assert budget is not None
    assert (budget.deposits, budget.withdrawals, budget.refusals) == (2, 1, 1)


def test_the_budget_recovers_after_its_ttl(clock: FakeClock) -> None:
    """A withdrawal counts for ttl seconds only: afterwards the reserve pays again."""
    runner = clocked_runner(clock, ONE_RETRY)
    with inject(Fault.disconnect(at=1)):
        runner.run(create_task, "first")
    clock.advance(11)
    with inject(Fault.disconnect(at=1)):
        runner.run(create_task, "second")
    assert backend_of(runner).attempts == 4


def test_no_budget_when_the_policy_has_none(clock: FakeClock) -> None:
    """retry_budget=None leaves each operation bounded by its own policy only."""
    runner = clocked_runner(clock, ONE_RETRY.override(retry_budget=None))
    assert runner.retry_budget is None
    with inject(Fault.disconnect(at=1, times=3)):
        runner.run(create_task, "x")
    assert backend_of(runner).attempts == 4
