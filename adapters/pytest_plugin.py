"""pytest plugin of retrying-uow (registered as ``retrying_uow``): fixtures for users' tests.

Installed with the package, pytest loads it by itself; every fixture is opt-in:

    def test_survives_a_lost_connection(uow_instant_retries, uow_inject, units):
        injection = uow_inject(Fault.disconnect(at=2))    # for the rest of the test
        units.run(create_placeholder, "t1")
        assert injection.fired

    def test_is_rerun_safe(uow_rerun_check, units):
        uow_rerun_check(units, create_placeholder, "t1", snapshot=..., restore=...)

    async def test_is_rerun_safe_async(uow_rerun_check_async, async_units):
        await uow_rerun_check_async(async_units, create_placeholder, "t1", snapshot=..., ...)

Strict mode, the migration tool: ``pytest --uow-strict`` (or ``uow_strict = true`` in the pytest
configuration) turns [`adapters.sqlalchemy.strict`][adapters.sqlalchemy.strict] on for the whole
run. Every statement that bypasses the unit of work on an engine a backend was built on then fails
its test, naming its call site: every failure is a direct use left.

The module imports nothing of the library at import time: pytest loads plugins before
coverage starts, and users' test runs that never ask for a fixture pay nothing.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from uow.testing import Fault, Injection, RerunReport, TestingState


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--uow-strict`` and the ``uow_strict`` configuration value."""
    help_text = (
        "retrying-uow strict mode: fail every statement run outside a unit of work on an "
        "engine a backend was built on, naming its call site"
    )
    parser.getgroup("retrying-uow").addoption(
        "--uow-strict", action="store_true", default=False, help=help_text
    )
    parser.addini("uow_strict", help_text, type="bool", default=False)


@pytest.fixture(scope="session", autouse=True)
def _uow_strict(request: pytest.FixtureRequest) -> Iterator[None]:
    """Turn strict mode on for the run when asked (``--uow-strict``); nothing otherwise."""
    config = request.config
    if not (config.getoption("uow_strict") or config.getini("uow_strict")):
        yield
        return
    from adapters.sqlalchemy import strict  # noqa: PLC0415 -- see the module docstring

    with strict():
        yield


@pytest.fixture
def uow_instant_retries() -> Iterator[TestingState]:
    """Make retries instant (no backoff sleeps) for one test; the previous state returns after."""
    from uow.testing import set_testing  # noqa: PLC0415 -- see the module docstring

    with set_testing(True) as state:
        yield state


@pytest.fixture
def uow_inject() -> Iterator[Callable[..., Injection]]:
    """Inject faults for the rest of the test: ``uow_inject(Fault.deadlock(at=1))``.

    Returns the [`uow.testing.Injection`][uow.testing.Injection] (what fired, the points reached). A
    fault that never fired fails the test at teardown, unless given ``strict=False``. For one block
    of a test, use ``with uow.testing.inject(...)`` instead.
    """
    from uow.testing import inject  # noqa: PLC0415

    with contextlib.ExitStack() as stack:

        def start(*faults: Fault, strict: bool = True) -> Injection:
            return stack.enter_context(inject(*faults, strict=strict))

        yield start


@pytest.fixture
def uow_rerun_check() -> Callable[..., RerunReport]:
    """Check that an operation may be rerun after a fault at any point; fail listing the rest.

    ``uow_rerun_check(runner, operation, *args, snapshot=..., restore=..., side_effects=...,
    result=...)`` is [`uow.testing.assert_rerun_safe`][uow.testing.assert_rerun_safe]: it returns
    the report when no injected fault changed the state, result or side effects, and fails the test
    otherwise.
    """
    from uow.testing import assert_rerun_safe  # noqa: PLC0415

    return assert_rerun_safe


@pytest.fixture
def uow_rerun_check_async() -> Callable[..., Awaitable[RerunReport]]:
    """Check that an ``async def`` operation may be rerun after a fault at any point.

    Awaited with the arguments of ``uow_rerun_check`` and an ``AsyncRunner``, it is
    [`uow.testing.assert_rerun_safe_async`][uow.testing.assert_rerun_safe_async];
    ``snapshot``, ``restore`` and ``side_effects`` may be ``async def`` functions.
    """
    from uow.testing import assert_rerun_safe_async  # noqa: PLC0415

    return assert_rerun_safe_async
