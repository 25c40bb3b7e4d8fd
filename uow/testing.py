"""Helpers for the tests of applications built on retrying-uow.

``set_testing()`` makes retries instant (no backoff sleeps) and can cap attempts, so
a test suite never waits on a retry policy meant for production::

    from uow.testing import set_testing

    set_testing(True, attempts=2)          # for the whole session (e.g. in conftest.py)

    with set_testing(True, attempts=1):    # or for one block; the previous state returns
        ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from uow._config import TestingState, get_testing, replace_testing

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["TestingState", "is_testing", "set_testing"]


class _TestingSwitch:
    """Returned by :func:`set_testing`; as a context manager it restores the previous state."""

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


def set_testing(enabled: bool = True, *, attempts: int | None = None) -> _TestingSwitch:  # noqa: FBT001, FBT002 -- mirrors stamina.set_testing(True)
    """Turn testing mode on or off: no sleeping between attempts, at most ``attempts``."""
    if attempts is not None and attempts < 1:
        msg = f"attempts must be at least 1 or None, got {attempts!r}"
        raise ValueError(msg)
    return _TestingSwitch(replace_testing(TestingState(enabled=enabled, attempts=attempts)))


def is_testing() -> bool:
    """Return whether testing mode is on."""
    return get_testing().enabled
