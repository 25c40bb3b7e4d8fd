"""One operation's retry loop: its state and rules, shared by the sync and async runners.

The first attempt runs without tenacity; once an attempt has failed, tenacity drives
the rest through the callbacks below. Both paths conclude a failure with
`RetryLoop.conclude`, so the records, logs and decisions are the same.
"""

from __future__ import annotations

import dataclasses
import random
from functools import partial
from typing import TYPE_CHECKING, Any

from uow import _config as config
from uow._config import get_testing
from uow._decision import Decision, Reason, decide
from uow._errors import UnitOfWorkError
from uow._faults import current_injection
from uow._hooks import RetryDetails, emit, qualified_name
from uow._kinds import Classification, ErrorKind
from uow._protocols import AttemptInfo
from uow._script import run_async, run_sync

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import tenacity

    from uow._budget import RetryBudget
    from uow._script import Script
    from uow._settings import RunnerSettings

_DETAILS_ATTRIBUTE = "__retrying_uow_details__"
_BUDGET_ATTRIBUTE = "__retrying_uow_budget_ran_out__"
_PERMANENT = Classification(ErrorKind.PERMANENT)
BUDGETED_KINDS = frozenset(
    {ErrorKind.DISCONNECT, ErrorKind.UNAVAILABLE, ErrorKind.FAILOVER, ErrorKind.INTERRUPTED}
)
"""The kinds whose retries the retry budget pays for: those an outage produces. Deadlocks
and lock waits are the server's answer, bounded by their own count."""
_random = random.Random()  # noqa: S311 -- jitter, not cryptography


class RetryBudgetRefused(Exception):
    """The retry budget stayed empty until the operation's time budget would run out."""


def retry_details(error: BaseException) -> RetryDetails | None:
    """Return how the operation that raised ``error`` ended, or ``None``.

    Every exception that leaves an outermost operation carries the record of its
    last attempt: the attempt count, the error kind and why it stopped. Its presence
    also tells outer runners not to retry an error that was already given up on.
    """
    details = getattr(error, _DETAILS_ATTRIBUTE, None)
    return details if isinstance(details, RetryDetails) else None


class RetryLoop:
    """The state of one operation's retries: its clock, its attempts, its verdicts."""

    __slots__ = (
        "_judged",
        "backend",
        "budget",
        "deadline",
        "faults",
        "name",
        "settings",
        "started",
    )

    def __init__(
        self, settings: RunnerSettings, backend: Any, name: str, budget: RetryBudget | None
    ) -> None:
        """Start the operation's clock; its first attempt deposits into the retry budget."""
        self.settings = settings
        self.backend = backend
        self.name = name
        self.budget = budget
        self.started = settings.clock()
        self.deadline = self.started + settings.policy.timeout
        self.faults = current_injection()
        self._judged: tuple[int, BaseException, Classification, Decision] | None = None
        if budget is not None:
            budget.deposit()

    def attempt_info(self, number: int) -> AttemptInfo:
        """Describe attempt ``number`` to the backend."""
        settings = self.settings
        return AttemptInfo(
            self.name, number, self.deadline, settings.policy, self.faults, settings.isolation_level
        )

    def elapsed(self) -> float:
        """Seconds since the first attempt began."""
        return self.settings.clock() - self.started

    def classify(self, error: BaseException | None) -> Classification:
        """Classify, keeping the library's own errors and already-ended ones permanent."""
        if (
            error is None
            or not isinstance(error, Exception)
            or isinstance(error, UnitOfWorkError)
            or retry_details(error) is not None
        ):
            return _PERMANENT
        classification: Classification = self.backend.classify(error)
        return classification

    def transient(self, error: BaseException) -> bool:
        """Tell whether ``error`` is of a kind other than permanent."""
        return self.classify(error).kind is not ErrorKind.PERMANENT

    def swallowed(self, seen: Sequence[BaseException]) -> BaseException | None:
        """Return the first transient error the operation's own code caught, if any.

        Such an attempt must not be committed: on a single server the rest of the
        transaction would commit without the part the server undid, and on Galera a
        COMMIT after a certification failure returns OK with the writes gone. Raising
        the original error again makes the runner roll back and rerun (or give up) as
        for any other.
        """
        for error in seen:
            if self.transient(error):
                _note(
                    error,
                    "retrying-uow: the operation caught this error and returned; "
                    "its attempt was not committed",
                )
                return error
        return None

    def deciding(self, error: BaseException, seen: Sequence[BaseException]) -> BaseException:
        """Return the error that decides a failed attempt.

        When the operation's code caught a transient error, carried on and then failed
        otherwise (say with SQLAlchemy's ``PendingRollbackError``), the transient error
        killed the transaction: it decides, exactly as if it had propagated. The
        library's own misuse errors and interrupts are never replaced.
        """
        if isinstance(error, UnitOfWorkError) or not isinstance(error, Exception):
            return error
        if self.transient(error):
            return error
        for earlier in seen:
            if earlier is not error and self.transient(earlier):
                _note(
                    earlier,
                    "retrying-uow: the operation caught this error, went on, and then failed "
                    f"with {qualified_name(error)}",
                )
                return earlier
        return error

    def budget_ran_out(self, number: int, cancelled: BaseException) -> TimeoutError:
        """Return the error of attempt ``number`` cut short by the operation's time budget."""
        error = TimeoutError(
            f"operation {self.name!r}: its time budget of {self.settings.policy.timeout:g} s "
            f"ran out during attempt {number}"
        )
        error.__cause__ = cancelled
        setattr(error, _BUDGET_ATTRIBUTE, True)
        return error

    def judge(self, number: int, error: BaseException) -> tuple[Classification, Decision]:
        """Classify attempt ``number``'s failure and decide, once per attempt."""
        judged = self._judged
        if judged is not None and judged[0] == number and judged[1] is error:
            return judged[2], judged[3]
        if getattr(error, _BUDGET_ATTRIBUTE, False):
            classification = Classification(ErrorKind.INTERRUPTED)
            decision = Decision(
                retry=False,
                wait=0.0,
                max_attempts=self.settings.policy.max_attempts(ErrorKind.INTERRUPTED),
                reason=Reason.TIME_BUDGET_EXHAUSTED,
            )
            self._judged = (number, error, classification, decision)
            return classification, decision
        classification = self.classify(error)
        testing = get_testing()
        decision = decide(
            self.settings.policy,
            classification.kind,
            attempt=number,
            elapsed=self.elapsed(),
            jitter=_random.random(),
            attempts_cap=testing.attempts if testing.enabled else None,
        )
        self._judged = (number, error, classification, decision)
        return classification, decision

    def last_failure(self) -> tuple[int, BaseException]:
        """Return the number and error of the attempt judged last."""
        assert self._judged is not None  # noqa: S101 -- only asked after a failure
        return self._judged[0], self._judged[1]

    def conclude(
        self, number: int, error: BaseException, *, stop: Reason | None = None
    ) -> Decision:
        """Decide after attempt ``number`` failed, and tell the world (logs, hooks, the error).

        A scheduled retry is logged at WARNING and handed to the hooks; a give-up is logged at
        ERROR, handed to the hooks and recorded on the error ([`retry_details`][uow.retry_details]);
        an error that is never retried goes to the hooks only.
        """
        classification, decision = self.judge(number, error)
        if stop is not None:  # a retry that was scheduled, then abandoned
            decision = dataclasses.replace(decision, retry=False, wait=0.0, reason=stop)
        details = RetryDetails(
            operation=self.name,
            attempt=number,
            max_attempts=decision.max_attempts,
            kind=classification.kind,
            errno=classification.errno,
            error_type=qualified_name(error),
            wait=decision.wait,
            elapsed=self.elapsed(),
            will_retry=decision.retry,
            reason=decision.reason,
            error=error,
            cause=classification.cause,
            timeout=self.settings.policy.timeout,
        )
        if not decision.retry:
            _attach(error, details)
        emit(details, self.settings.hooks, log=decision.reason is not Reason.NOT_RETRYABLE)
        return decision

    def pause(self, seconds: float, *, sync: bool) -> Any:
        """Wait before the next attempt, then for the retry budget; awaitable when not ``sync``.

        Raises [`RetryBudgetRefused`][uow._loop.RetryBudgetRefused] when the budget stays
        empty until the time budget would run out (at once in testing mode, which skips waits).
        """
        if sync:
            return run_sync(self._pausing(seconds, self.settings.sleep or config.sleep))
        return run_async(self._pausing(seconds, self.settings.sleep or config.async_sleep))

    def _pausing(self, seconds: float, sleep: Callable[[float], Any]) -> Script[None]:
        """Sleep ``seconds``; while the retry budget cannot pay for the retry, wait on.

        A refused retry is not made, and the operation is not given up either while its
        time budget lasts: it waits another backoff step and asks again. Giving up at once
        would have closed-loop workers start new operations at once, and their first
        attempts (which the budget does not hold back) would hit the struggling server
        harder than the retries did.
        """
        testing = get_testing().enabled
        if not testing:
            yield partial(sleep, seconds)
        judged = self._judged
        budget = self.budget
        if budget is None or judged is None or judged[2].kind not in BUDGETED_KINDS:
            return
        while not budget.withdraw():
            # Asking again costs the server nothing: ask often, so that a retry goes out
            # as soon as the budget can pay for it (at once after a recovery, see refund).
            poll = budget.poll_interval() * (0.5 + _random.random())
            if testing or self.elapsed() + poll >= self.settings.policy.timeout:
                raise RetryBudgetRefused
            yield partial(sleep, poll)

    def succeeded(self, number: int) -> None:
        """Attempt ``number`` committed: a retry that worked gives its withdrawal back.

        The budget caps retries that fail (the amplification an outage causes); once the
        database answers again, the operations still waiting on the budget proceed.
        """
        judged = self._judged
        if (
            number > 1
            and self.budget is not None
            and judged is not None
            and judged[2].kind in BUDGETED_KINDS
        ):
            self.budget.refund()

    def tenacity_options(self, *, sync: bool) -> dict[str, Any]:
        """Arguments of tenacity's ``Retrying``/``AsyncRetrying`` for attempts 2 and on.

        tenacity numbers them from 1; attempt 1 already failed outside it. Each failure
        is concluded once: by ``retry`` when its kind is never retried, by ``stop`` on
        give-up, by ``before_sleep`` when a retry follows.
        """
        callbacks = _TenacityCallbacks(self)

        def pause(seconds: float) -> Any:
            return self.pause(seconds, sync=sync)

        return {
            "sleep": pause,
            "retry": callbacks.retry,
            "stop": callbacks.stop,
            "wait": callbacks.wait,
            "before_sleep": callbacks.before_sleep,
            "reraise": True,
        }


class _TenacityCallbacks:
    """tenacity's view of a `RetryLoop`: attempt numbers shifted by the first one."""

    __slots__ = ("loop",)

    def __init__(self, loop: RetryLoop) -> None:
        self.loop = loop

    @staticmethod
    def _failure(state: tenacity.RetryCallState) -> tuple[int, BaseException]:
        assert state.outcome is not None  # noqa: S101 -- tenacity asks after an outcome
        error = state.outcome.exception()
        assert error is not None  # noqa: S101 -- only failures reach the callbacks
        return state.attempt_number + 1, error

    def retry(self, state: tenacity.RetryCallState) -> bool:
        assert state.outcome is not None  # noqa: S101
        if not state.outcome.failed:
            return False
        number, error = self._failure(state)
        if self.loop.judge(number, error)[1].reason is Reason.NOT_RETRYABLE:
            self.loop.conclude(number, error)
            return False
        return True

    def stop(self, state: tenacity.RetryCallState) -> bool:
        number, error = self._failure(state)
        if self.loop.judge(number, error)[1].retry:
            return False
        self.loop.conclude(number, error)
        return True

    def wait(self, state: tenacity.RetryCallState) -> float:
        return self.loop.judge(*self._failure(state))[1].wait

    def before_sleep(self, state: tenacity.RetryCallState) -> None:
        self.loop.conclude(*self._failure(state))


def _attach(error: BaseException, details: RetryDetails) -> None:
    """Record how the operation ended on the error itself (and in its notes, 3.11+).

    An error that already carries a record ended another operation: that record stays.
    """
    if retry_details(error) is not None:
        return
    try:
        setattr(error, _DETAILS_ATTRIBUTE, details)
    except (AttributeError, TypeError):  # pragma: no cover - exceptions with __slots__
        return
    if details.attempt > 1 or details.cause is not None:
        cause = "" if details.cause is None else f"; likely cause: {details.cause}"
        of = "" if details.max_attempts is None else f"/{details.max_attempts}"
        _note(
            error,
            f"retrying-uow: operation {details.operation!r} gave up after attempt "
            f"{details.attempt}{of} ({details.reason.value}, "
            f"kind={details.kind.value}, {details.elapsed:.3f} s){cause}",
        )


def _note(error: BaseException, note: str) -> None:
    add_note = getattr(error, "add_note", None)
    if add_note is not None and note not in getattr(error, "__notes__", ()):
        add_note(note)
