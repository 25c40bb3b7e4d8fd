"""set_testing(): instant retries and an attempt cap for tests, restored like a context manager."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.memory import SimulatedError
from tests.unit.conftest import FakeClock, backend_of, clocked_runner, create_task, make_runner
from uow import RetryPolicy, retry_details
from uow import _config as config
from uow.testing import Fault, TestingState, inject, is_testing, set_testing


def test_set_testing_caps_attempts() -> None:
    """set_testing(True, attempts=2) makes any policy stop after two attempts."""
    runner = make_runner(RetryPolicy(attempts=10))
    backend = backend_of(runner)
    with (
        set_testing(True, attempts=2),
        pytest.raises(SimulatedError) as excinfo,
        inject(Fault.disconnect(at=1, times=10)),
    ):
        runner.run(create_task, "x")
    assert backend.attempts == 2
    details = retry_details(excinfo.value)
    assert details is not None
    assert details.max_attempts == 2


def test_set_testing_caps_a_kind_bounded_by_time_only() -> None:
    """The cap also bounds kinds that have no count of their own (disconnects by default)."""
    runner = make_runner()
    with (
        set_testing(True, attempts=3),
        pytest.raises(SimulatedError),
        inject(Fault.disconnect(at=1, times=10)),
    ):
        runner.run(create_task, "x")
    assert backend_of(runner).attempts == 3


def test_attempts_cap_is_ignored_when_testing_is_off(clock: FakeClock) -> None:
    """The cap only applies in testing mode."""
    runner = clocked_runner(clock, RetryPolicy(attempts=3))
    with (
        set_testing(False, attempts=1),
        pytest.raises(SimulatedError),
        inject(Fault.disconnect(at=1, times=10)),
    ):
        runner.run(create_task, "x")
    assert backend_of(runner).attempts == 3
    assert len(clock.sleeps) == 2


def test_set_testing_restores_the_previous_state() -> None:
    """As a context manager set_testing restores what was there before, nested or not."""
    assert is_testing() is False
    with set_testing(True, attempts=3) as state:
        assert state.enabled is True
        assert state.attempts == 3
        with set_testing(False):
            assert is_testing() is False
        assert config.get_testing() == state
    assert is_testing() is False
    assert config.get_testing().attempts is None


def test_set_testing_restores_after_an_exception() -> None:
    """An exception leaving the block still restores the previous state, and propagates."""
    with pytest.raises(RuntimeError, match="boom"), set_testing(True, attempts=1):
        raise RuntimeError("boom")
    assert is_testing() is False
    assert config.get_testing().attempts is None


def test_switch_restores_the_outer_state_after_an_exception_in_a_nested_block() -> None:
    """An exception leaving a nested set_testing block brings back the outer state exactly."""
    with set_testing(True, attempts=2):
        with pytest.raises(KeyError), set_testing(False, attempts=5):
            raise KeyError("x")
        assert config.get_testing() == TestingState(enabled=True, attempts=2)
    assert config.get_testing() == TestingState()


def test_set_testing_works_without_a_with_block() -> None:
    """Called plainly, set_testing switches for good (the autouse fixture switches back)."""
    set_testing(True)
    assert is_testing() is True


@pytest.mark.parametrize("attempts", [0, -1, True])
def test_set_testing_rejects_a_useless_cap(attempts: int) -> None:
    """An attempts cap below 1 (or a boolean) is an error naming the value."""
    with pytest.raises(ValueError, match=str(attempts)):
        set_testing(True, attempts=attempts)
    assert is_testing() is False


def test_sleep_is_real_only_outside_testing_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default sleep calls time.sleep normally and does nothing in testing mode."""
    slept: list[float] = []
    monkeypatch.setattr(config, "time", type("T", (), {"sleep": staticmethod(slept.append)}))
    config.sleep(0.25)
    with set_testing(True):
        config.sleep(5)
    assert slept == [0.25]


def test_testing_mode_makes_retries_instant(clock: FakeClock) -> None:
    """In testing mode a long backoff never reaches the runner's sleep; outside it, it does."""
    runner = clocked_runner(clock, RetryPolicy(wait_initial=30, wait_max=60, timeout=600))
    with set_testing(True), inject(Fault.failover(at=1, times=2)):
        runner.run(create_task, "x")
    assert clock.sleeps == []
    with inject(Fault.failover(at=1)):
        runner.run(create_task, "y")
    assert len(clock.sleeps) == 1
    assert 0 <= clock.sleeps[0] < 30


def test_testing_mode_makes_the_default_sleep_instant(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a sleep of its own, the runner never reaches time.sleep in testing mode."""
    slept: list[float] = []
    monkeypatch.setattr(config, "time", type("T", (), {"sleep": staticmethod(slept.append)}))
    runner = make_runner(RetryPolicy(wait_initial=5, wait_max=5))
    with set_testing(True), inject(Fault.disconnect(at=1, times=2)):
        runner.run(create_task, "a")
    assert slept == []
    with inject(Fault.disconnect(at=1)):
        runner.run(create_task, "b")
    assert len(slept) == 1


def test_testing_state_is_not_collected_as_a_test() -> None:
    """TestingState, imported into a test module, is not mistaken for a test class."""
    marker: Any = TestingState
    assert marker.__test__ is False


def test_testing_mode_caps_attempts_at_ten_by_default() -> None:
    """Waits are skipped in testing mode, so a fault that never ends stops after 10 attempts."""
    runner = make_runner()
    with (
        set_testing(True),
        inject(Fault.disconnect(at=1, times=50), strict=False),
        pytest.raises(SimulatedError),
    ):
        runner.run(create_task, "never")
    assert backend_of(runner).attempts == 10
