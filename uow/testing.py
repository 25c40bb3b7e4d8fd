"""Helpers for the tests of applications built on retrying-uow.

``set_testing()`` makes retries instant (no backoff sleeps) and can cap attempts, so
a test suite never waits on a retry policy meant for production:

    from uow.testing import set_testing

    set_testing(True, attempts=2)          # for the whole session (e.g. in conftest.py)

    with set_testing(True, attempts=1):    # or for one block; the previous state returns
        ...

``inject()`` makes the backends fail at chosen points of an attempt (a lost connection
at statement 2, a deadlock, a lost COMMIT), described by [`Fault`][uow.testing.Fault] whatever the
database; ``check_rerun_safety()`` injects a fault at every point of an operation in
turn and reports where a rerun leaves something different from a clean run
(``await check_rerun_safety_async(...)`` for an ``AsyncRunner``):

    with inject(Fault.disconnect(at=2)) as injection:
        units.run(create_placeholder, "t1")           # attempt 1 fails, attempt 2 commits
    assert injection.fired == (Fault.disconnect(at=2),)
"""

from __future__ import annotations

from uow._config import TestingState, is_testing, set_testing
from uow._faults import Fault, Injection, InjectionPoint, Point, inject
from uow._rerun import (
    RerunFinding,
    RerunReport,
    assert_rerun_safe,
    assert_rerun_safe_async,
    check_rerun_safety,
    check_rerun_safety_async,
)

__all__ = [
    "Fault",
    "Injection",
    "InjectionPoint",
    "Point",
    "RerunFinding",
    "RerunReport",
    "TestingState",
    "assert_rerun_safe",
    "assert_rerun_safe_async",
    "check_rerun_safety",
    "check_rerun_safety_async",
    "inject",
    "is_testing",
    "set_testing",
]

# Imported into a test module, a class named Test* would be collected (and warned about).
TestingState.__test__ = False  # type: ignore[attr-defined]
