"""Process-wide switches: the testing mode that makes retries instant."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TestingState:
    """Whether testing mode is on and the attempt cap it imposes."""

    enabled: bool = False
    attempts: int | None = None


_state = TestingState()


def get_testing() -> TestingState:
    """Return the current testing state."""
    return _state


def replace_testing(state: TestingState) -> TestingState:
    """Install a new testing state and return the previous one."""
    global _state
    previous, _state = _state, state
    return previous


def sleep(seconds: float) -> None:
    """Sleep between attempts, unless testing mode makes retries instant."""
    if not _state.enabled:
        time.sleep(seconds)
