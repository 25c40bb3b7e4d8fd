"""The sync runner: one business operation, rerun as a whole on transient failures."""

from __future__ import annotations

import functools
import sys
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar

import tenacity

from uow._attempt import Attempt, JoinedAttempt, active_attempt, joined_unit
from uow._blockform import check_block_form
from uow._budget import RetryBudget, budget_for
from uow._decision import Reason
from uow._loop import RetryBudgetRefused, RetryLoop
from uow._names import check_operation, check_result
from uow._script import run_sync
from uow._settings import RunnerOptions, RunnerSettings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import FrameType

    from typing_extensions import Unpack

    from uow._policy import RetryPolicy
    from uow._protocols import Backend

U_co = TypeVar("U_co", covariant=True)
R = TypeVar("R")
P = ParamSpec("P")


class Runner(Generic[U_co]):
    """Runs business operations, each in fresh units of work, retrying the whole.

    Three entry points share one retry loop: [`run`][uow.Runner.run] (a call),
    [`operation`][uow.Runner.operation] (a decorator) and [`attempts`][uow.Runner.attempts] (a block
    form for inline code). Build one with an adapter's ``factory`` (e.g.
    ``SqlAlchemyUnitOfWork.factory(engine)``), or from a backend: ``Runner(backend, policy=...,
    hooks=...)``.
    """

    __slots__ = ("_backend", "_budget", "_settings")

    def __init__(self, backend: Backend[U_co], **options: Unpack[RunnerOptions]) -> None:
        """Run operations on ``backend``; ``options``: see [`RunnerOptions`][uow.RunnerOptions]."""
        self._backend = backend
        self._settings = RunnerSettings.of(options)
        self._budget = _budget_of(backend, self._settings)

    @classmethod
    def _with(cls, backend: Backend[U_co], settings: RunnerSettings) -> Runner[U_co]:
        runner = cls.__new__(cls)
        runner._backend = backend  # noqa: SLF001 -- its own class
        runner._settings = settings  # noqa: SLF001
        runner._budget = _budget_of(backend, settings)  # noqa: SLF001
        return runner

    @property
    def backend(self) -> Backend[U_co]:
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

    def using(self, **options: Unpack[RunnerOptions]) -> Runner[U_co]:
        """Return a runner on the same backend with some settings replaced.

        For one operation or a family of them, e.g. ``units.using(idempotent=True)`` or
        ``units.using(policy=units.policy.override(timeout=300))``.

        What happens when the connection is lost during COMMIT (outcome unknown):
        with commit markers enabled on the backend, the marker decides; otherwise
        ``verify(uow)``, run in a fresh unit of work, returns whether the operation's
        writes are there (committed: its result is returned; absent: it is rerun);
        otherwise ``idempotent=True`` reruns it; otherwise
        [`CommitOutcomeUnknown`][uow.CommitOutcomeUnknown] is raised.
        """
        return Runner._with(self._backend, RunnerSettings.of(options, self._settings))

    def run(self, fn: Callable[Concatenate[U_co, P], R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(uow, *args, **kwargs)`` as one operation and return its result.

        Each attempt gets a fresh unit of work; the framework commits when ``fn``
        returns and rolls back when it raises. After the last attempt the original
        exception is raised, with [`uow.retry_details`][uow.retry_details] telling how it ended.
        """
        name = check_operation(fn, "sync")
        for attempt in self._attempts(name, None):
            with attempt as unit:
                result = fn(unit, *args, **kwargs)
                check_result(fn, result, "sync")
        return result

    def operation(self, fn: Callable[Concatenate[U_co, P], R], /) -> Callable[P, R]:
        """Decorate a function taking a unit of work first; calling it runs it as an operation."""
        check_operation(fn, "sync")

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            return self.run(fn, *args, **kwargs)

        return wrapper

    def attempts(self, name: str = "attempts") -> Iterator[Attempt[U_co] | JoinedAttempt[U_co]]:
        """Yield attempts for inline code: ``for a in runner.attempts(): with a as uow: ...``.

        ``return`` and ``break`` in the loop are refused ([`BlockFormError`][uow.BlockFormError]):
        they would leave it before a failed attempt is rerun. Inside a running operation
        on the same database, yields one attempt that joins it: no transaction of its
        own, no commit, no retry.
        """
        return self._attempts(name, sys._getframe(1))  # noqa: SLF001 -- the caller's loop

    def _attempts(
        self, name: str, caller: FrameType | None
    ) -> Iterator[Attempt[U_co] | JoinedAttempt[U_co]]:
        if caller is not None:
            check_block_form(caller)
        if active_attempt.get() is not None:  # inside a running operation: join or refuse
            joined = joined_unit(self._backend, self._settings, "sync", name)
            if joined is not None:
                yield JoinedAttempt(joined)
                return
        loop = RetryLoop(self._settings, self._backend, name, self._budget)
        attempt: Attempt[U_co] = Attempt(loop, 1, self._checker)
        yield attempt
        error = self._outcome(attempt)
        if error is not None:
            yield from self._reruns(loop, error)

    def _reruns(self, loop: RetryLoop, error: BaseException) -> Iterator[Attempt[U_co]]:
        """After a failed first attempt: the retries, through tenacity, or the error."""
        decision = loop.conclude(1, error)
        if not decision.retry:
            raise error
        try:
            loop.pause(decision.wait, sync=True)
            for manager in tenacity.Retrying(**loop.tenacity_options(sync=True)):
                attempt: Attempt[U_co] = Attempt(
                    loop, manager.retry_state.attempt_number + 1, self._checker
                )
                yield attempt
                failed = self._outcome(attempt)
                if failed is None:
                    loop.succeeded(attempt.number)
                with manager:
                    if failed is not None:
                        raise failed
        except RetryBudgetRefused:
            refused = True
        else:
            refused = False
        if refused:
            number, last = loop.last_failure()
            loop.conclude(number, last, stop=Reason.RETRY_BUDGET_EXHAUSTED)
            raise last

    @staticmethod
    def _outcome(attempt: Attempt[Any]) -> BaseException | None:
        try:
            return attempt.outcome()
        except BaseException:
            run_sync(attempt.abandoned())
            raise

    def _checker(self, timeout: float) -> Callable[[Callable[[Any], object]], object]:
        """Return the ``run`` of a fresh runner verifying a lost COMMIT within ``timeout``."""
        policy = self._settings.policy.override(timeout=timeout)
        checker = RunnerSettings(policy=policy, clock=self._settings.clock, independent=True)
        return Runner._with(self._backend, checker).run

    def __repr__(self) -> str:
        policy = self._settings.policy
        return f"Runner({self._backend!r}, attempts={policy.attempts}, timeout={policy.timeout})"


def _budget_of(backend: object, settings: RunnerSettings) -> RetryBudget | None:
    policy = settings.policy.retry_budget
    if policy is None:
        return None
    return budget_for(getattr(backend, "database", backend), policy, settings.clock)
