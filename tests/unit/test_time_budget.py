"""The time budget: measured with the runner's clock, waits included, from the first attempt."""

from __future__ import annotations

import random
from typing import Any

import pytest

from adapters.memory import SimulatedError
from tests.unit.conftest import FakeClock, backend_of, clocked_runner, create_task
from uow import ErrorKind, Reason, RetryDetails, RetryPolicy, retry_details
from uow import _loop as loop_module
from uow.testing import Fault, inject

ALMOST_ONE = 0.999_999


def pin_jitter(monkeypatch: pytest.MonkeyPatch, value: float) -> None:
    """Make every jitter the runner draws ``value``."""

    class Pinned(random.Random):
        def random(self) -> float:
            return value

    monkeypatch.setattr(loop_module, "_random", Pinned())


def test_time_budget_stops_retries(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a slow failing operation, retries stop once the next wait would pass the timeout."""
    pin_jitter(monkeypatch, ALMOST_ONE)
    policy = RetryPolicy(timeout=1.0, wait_initial=0.1, wait_max=0.4)
    runner = clocked_runner(clock, policy)
    starts: list[float] = []

    def slow(uow: Any) -> None:
        starts.append(clock.now - 1000.0)
        clock.advance(0.05)
        uow.tasks.all()

    with (
        pytest.raises(SimulatedError) as excinfo,
        inject(Fault(ErrorKind.UNAVAILABLE, 2003, times=100), strict=False),
    ):
        runner.run(slow)
    details = retry_details(excinfo.value)
    assert details is not None
    assert details.reason == "time budget exhausted"
    assert details.max_attempts is None
    assert clock.sleeps == pytest.approx([0.1, 0.2, 0.4], rel=1e-5)
    assert backend_of(runner).attempts == 4
    assert all(start < policy.timeout for start in starts)
    elapsed = clock.now - 1000.0
    assert details.elapsed == pytest.approx(elapsed)
    assert elapsed <= policy.timeout


def test_time_budget_counts_from_the_first_attempt(clock: FakeClock) -> None:
    """A first attempt slower than the whole budget is not rerun."""
    runner = clocked_runner(clock, RetryPolicy(timeout=5))

    def very_slow(uow: Any) -> None:
        clock.advance(6)
        uow.tasks.all()

    with pytest.raises(SimulatedError) as excinfo, inject(Fault.disconnect(at=1)):
        runner.run(very_slow)
    details = retry_details(excinfo.value)
    assert details is not None
    assert details.reason == "time budget exhausted"
    assert details.attempt == 1
    assert backend_of(runner).attempts == 1
    assert clock.sleeps == []


def test_give_up_on_time_notes_the_attempt_without_a_maximum(clock: FakeClock) -> None:
    """The give-up note of a kind bounded by time says 'attempt 2', never '2/None'."""
    runner = clocked_runner(clock, RetryPolicy(timeout=5))

    def slow(uow: Any) -> None:
        clock.advance(3)
        uow.tasks.all()

    with pytest.raises(SimulatedError) as excinfo, inject(Fault.disconnect(at=1, times=2)):
        runner.run(slow)
    (note,) = excinfo.value.__notes__
    assert "gave up after attempt 2 (time budget exhausted, kind=disconnect" in note
    assert "None" not in note


def test_attempt_deadline_is_start_plus_timeout(clock: FakeClock) -> None:
    """Every attempt is told the same deadline: the operation's start plus its timeout."""
    runner = clocked_runner(clock, RetryPolicy(timeout=12))
    deadlines: list[float] = []

    def op(uow: Any) -> None:
        deadlines.append(uow.attempt.deadline)
        clock.advance(1)
        uow.tasks.all()

    with inject(Fault(ErrorKind.UNAVAILABLE, times=2)):
        runner.run(op)
    assert deadlines == [1012.0, 1012.0, 1012.0]


def test_waits_are_the_policy_backoff_with_the_drawn_jitter(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner sleeps exactly the backoff for each retry number and drawn jitter."""
    pin_jitter(monkeypatch, 0.5)
    policy = RetryPolicy(wait_initial=0.1, wait_max=1)
    runner = clocked_runner(clock, policy)
    with inject(Fault.lock_wait(at=1, times=4)):
        runner.run(create_task, "x")
    expected = [policy.backoff(ErrorKind.LOCK_WAIT, n, 0.5) for n in range(1, 5)]
    assert clock.sleeps == pytest.approx(expected)
    assert clock.sleeps == pytest.approx([0.05, 0.1, 0.2, 0.4])


def test_waits_are_drawn_within_full_jitter_bounds(clock: FakeClock) -> None:
    """Unpinned, each wait lies in [0, step) and is the one the hooks were told."""
    seen: list[RetryDetails] = []
    policy = RetryPolicy(wait_initial=0.1, wait_max=1)
    runner = clocked_runner(clock, policy, hooks=[seen.append])
    with inject(Fault(ErrorKind.UNAVAILABLE, times=8)):
        runner.run(create_task, "x")
    assert clock.sleeps == [d.wait for d in seen]
    for number, wait in enumerate(clock.sleeps, start=1):
        assert 0 <= wait < min(1, 0.1 * 2 ** (number - 1))


def test_disconnects_are_retried_until_the_budget_is_spent(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By default a lost connection is rerun past five attempts, until 30 s would be passed."""
    pin_jitter(monkeypatch, ALMOST_ONE)
    runner = clocked_runner(clock)
    with (
        pytest.raises(SimulatedError) as excinfo,
        inject(Fault.disconnect(at=1, times=100), strict=False),
    ):
        runner.run(create_task, "x")
    details = retry_details(excinfo.value)
    assert details is not None
    assert details.reason is Reason.TIME_BUDGET_EXHAUSTED
    assert details.attempt == 13
    assert clock.sleeps[:3] == pytest.approx([0.02, 0.04, 0.08], rel=1e-5)
    assert clock.sleeps[-1] == pytest.approx(5.0, rel=1e-5)
    assert sum(clock.sleeps) + 5.0 >= 30.0 > sum(clock.sleeps)


def test_using_keeps_the_clock_and_the_sleep(clock: FakeClock) -> None:
    """A runner derived with using() measures time with the same clock and sleeps the same way."""
    runner = clocked_runner(clock).using(idempotent=True)
    assert runner.settings.clock is clock
    assert runner.settings.sleep == clock.sleep
