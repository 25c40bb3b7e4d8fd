"""The async runner: the sync runner's twin for ``async def`` operations.

Every rule it applies lives in the shared modules (policy, decision, loop, the
end-of-attempt script, commit resolution); this module only awaits where the sync
runner calls, and sleeps with ``asyncio.sleep``.
"""

from __future__ import annotations

import functools
import inspect
import sys
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar

import tenacity

from uow._attempt import AsyncAttempt, JoinedAttempt, joined_unit
from uow._blockform import check_block_form
from uow._budget import RetryBudget, budget_for
from uow._decision import Reason
from uow._loop import RetryBudgetRefused, RetryLoop
from uow._names import check_operation, check_result
from uow._script import run_async
from uow._settings import AsyncRunnerOptions, RunnerSettings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from types import FrameType

    from typing_extensions import Unpack

    from uow._policy import RetryPolicy
    from uow._protocols import AsyncBackend

U_co = TypeVar("U_co", covariant=True)
R = TypeVar("R")
P = ParamSpec("P")


class AsyncRunner(Generic[U_co]):
    """Runs ``async def`` business operations, each in fresh units of work, retrying the whole.

    The same three entry points as [`Runner`][uow.Runner]: ``await units.run(fn, ...)``, the
    [`operation`][uow.AsyncRunner.operation] decorator, and ``async for attempt in units.attempts():
    async with attempt as uow: ...``. Waits are ``asyncio.sleep``: the event loop is never blocked.
    A cancelled task (or an ``asyncio.timeout`` around an operation) is never retried: its attempt
    is rolled back and the cancellation propagates.
    """

    __slots__ = ("_backend", "_budget", "_settings")

    def __init__(self, backend: AsyncBackend[U_co], **options: Unpack[AsyncRunnerOptions]) -> None:
        """Run operations on ``backend``; ``options`` as for [`Runner`][uow.Runner]."""
        self._backend = backend
        self._settings = RunnerSettings.of(options)
        self._budget = _budget_of(backend, self._settings)

    @classmethod
    def _with(cls, backend: AsyncBackend[U_co], settings: RunnerSettings) -> AsyncRunner[U_co]:
        runner = cls.__new__(cls)
        runner._backend = backend  # noqa: SLF001 -- its own class
        runner._settings = settings  # noqa: SLF001
        runner._budget = _budget_of(backend, settings)  # noqa: SLF001
        return runner

    @property
    def backend(self) -> AsyncBackend[U_co]:
        """The adapter's backend this runner opens units of work on."""
        return self._backend

    @property
    def settings(self) -> RunnerSettings:
        """Every setting of this runner (frozen)."""
        return self._settings

    @property
    def retry_budget(self) -> RetryBudget | None:
        """The retry budget this runner shares with the others on its database (``None``: off)."""
        return self._budget

    @property
    def policy(self) -> RetryPolicy:
        """The retry policy applied to every operation of this runner."""
        return self._settings.policy

    def using(self, **options: Unpack[AsyncRunnerOptions]) -> AsyncRunner[U_co]:
        """Return a runner on the same backend with some settings replaced."""
        return AsyncRunner._with(self._backend, RunnerSettings.of(options, self._settings))

    async def run(
        self,
        fn: Callable[Concatenate[U_co, P], Awaitable[R]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """Await ``fn(uow, *args, **kwargs)`` as one operation and return its result.

        ``fn`` is an ``async def`` (a plain function returning a value works too).
        """
        name = check_operation(fn, "async")
        async for attempt in self._attempts(name, None):
            async with attempt as unit:
                returned: Any = fn(unit, *args, **kwargs)
                if inspect.isawaitable(returned):  # a plain function's value is used as it is
                    returned = await returned
                check_result(fn, returned, "async")
                result: R = returned
        return result

    def operation(
        self, fn: Callable[Concatenate[U_co, P], Awaitable[R]], /
    ) -> Callable[P, Awaitable[R]]:
        """Decorate an ``async def`` taking a unit of work first; awaiting a call runs it."""
        check_operation(fn, "async")

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            return await self.run(fn, *args, **kwargs)

        return wrapper

    def attempts(
        self, name: str = "attempts"
    ) -> AsyncIterator[AsyncAttempt[U_co] | JoinedAttempt[U_co]]:
        """Yield attempts: ``async for a in runner.attempts(): async with a as uow: ...``.

        ``return`` and ``break`` in the loop are refused, as for the sync block form.
        """
        return self._attempts(name, sys._getframe(1))  # noqa: SLF001 -- the caller's loop

    async def _attempts(
        self, name: str, caller: FrameType | None
    ) -> AsyncIterator[AsyncAttempt[U_co] | JoinedAttempt[U_co]]:
        check_block_form(caller)
        joined = joined_unit(self._backend, self._settings, "async", name)
        if joined is not None:
            yield JoinedAttempt(joined)
            return
        loop = RetryLoop(self._settings, self._backend, name, self._budget)
        attempt: AsyncAttempt[U_co] = AsyncAttempt(loop, 1, self._checker)
        yield attempt
        error = await self._outcome(attempt)
        if error is None:
            return
        decision = loop.conclude(1, error)
        if not decision.retry:
            raise error
        try:
            await loop.pause(decision.wait, sync=False)
            async for manager in tenacity.AsyncRetrying(**loop.tenacity_options(sync=False)):
                number = manager.retry_state.attempt_number + 1
                attempt = AsyncAttempt(loop, number, self._checker)
                yield attempt
                error = await self._outcome(attempt)
                if error is None:
                    loop.succeeded(number)
                with manager:
                    if error is not None:
                        raise error
        except RetryBudgetRefused:
            refused = True
        else:
            refused = False
        if refused:
            number, error = loop.last_failure()
            loop.conclude(number, error, stop=Reason.RETRY_BUDGET_EXHAUSTED)
            raise error

    @staticmethod
    async def _outcome(attempt: AsyncAttempt[Any]) -> BaseException | None:
        try:
            return attempt.outcome()
        except BaseException:
            await run_async(attempt.abandoned())
            raise

    def _checker(self, timeout: float) -> Callable[[Callable[[Any], Any]], Awaitable[Any]]:
        """Return the ``run`` of a fresh runner verifying a lost COMMIT within ``timeout``."""
        policy = self._settings.policy.override(timeout=timeout)
        checker = RunnerSettings(policy=policy, clock=self._settings.clock, independent=True)
        return AsyncRunner._with(self._backend, checker).run

    def __repr__(self) -> str:
        policy = self._settings.policy
        return (
            f"AsyncRunner({self._backend!r}, attempts={policy.attempts}, timeout={policy.timeout})"
        )


def _budget_of(backend: object, settings: RunnerSettings) -> RetryBudget | None:
    policy = settings.policy.retry_budget
    if policy is None:
        return None
    return budget_for(getattr(backend, "database", backend), policy, settings.clock)
