"""Process-wide switches: the testing mode that makes retries instant."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import TracebackType


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
    global _state  # one switch for the process, as stamina's
    previous, _state = _state, state
    return previous


def sleep(seconds: float) -> None:
    """Sleep between attempts, unless testing mode makes retries instant."""
    if not _state.enabled:
        time.sleep(seconds)


async def async_sleep(seconds: float) -> None:
    """Sleep between attempts without blocking the event loop (instant in testing mode)."""
    if not _state.enabled:
        await asyncio.sleep(seconds)


class _TestingSwitch:
    """Returned by `set_testing`; as a context manager it restores the previous state."""

    def __init__(self, previous: TestingState) -> None:
        self._previous = previous

    def __enter__(self) -> TestingState:
        return get_testing()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        replace_testing(self._previous)


TESTING_ATTEMPTS = 10
"""Most attempts per operation in testing mode unless ``set_testing`` is told otherwise."""


def set_testing(
    enabled: bool = True,  # noqa: FBT001, FBT002 -- mirrors stamina.set_testing(True)
    *,
    attempts: int | None = TESTING_ATTEMPTS,
) -> _TestingSwitch:
    """Turn testing mode on or off: no sleeping between attempts, at most ``attempts``.

    The cap matters because waits are skipped: a failure that never goes away (a fault
    injected for every attempt) would otherwise be retried until the operation's time
    budget, without a pause. ``attempts=None`` leaves only the policy's own bounds.
    """
    if attempts is not None and (isinstance(attempts, bool) or attempts < 1):
        msg = f"attempts must be at least 1 or None, got {attempts!r}"
        raise ValueError(msg)
    state = TestingState(enabled=enabled, attempts=attempts if enabled else None)
    return _TestingSwitch(replace_testing(state))


def is_testing() -> bool:
    """Return whether testing mode is on."""
    return get_testing().enabled
