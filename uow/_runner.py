"""The runner: one business operation, rerun as a whole on transient failures."""

from __future__ import annotations

import functools
import random
import time
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, cast

import tenacity

from uow._attempt import Attempt, JoinedAttempt, RetryingAttempt, active_attempt
from uow._commit import RESOLUTION_GRACE, log_resolution, resolve_commit
from uow._config import get_testing, sleep
from uow._decision import Decision, decide
from uow._errors import CommitOutcomeUnknown, UnitOfWorkError
from uow._hooks import RetryDetails, RetryHook, emit, qualified_name
from uow._kinds import Classification, ErrorKind, commit_outcome_unknown
from uow._policy import RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from uow._events import EventHandlers
    from uow._protocols import Backend, Transaction

U = TypeVar("U")
R = TypeVar("R")
P = ParamSpec("P")

_DETAILS_ATTRIBUTE = "__retrying_uow_details__"
_random = random.Random()  # noqa: S311 -- jitter, not cryptography


def retry_details(error: BaseException) -> RetryDetails | None:
    """Return how the operation that raised ``error`` ended, or ``None``.

    Every exception that leaves an outermost operation carries the record of its
    last attempt: the attempt count, the error kind and why it stopped. Its presence
    also tells outer runners not to retry an error that was already given up on.
    """
    details = getattr(error, _DETAILS_ATTRIBUTE, None)
    return details if isinstance(details, RetryDetails) else None


class Runner(Generic[U]):
    """Runs business operations, each in fresh units of work, retrying the whole.

    Three entry points share one retry loop: :meth:`run` (a call), :meth:`operation`
    (a decorator) and :meth:`attempts` (a block form for inline code).
    """

    def __init__(
        self,
        backend: Backend[U],
        *,
        policy: RetryPolicy | None = None,
        hooks: Sequence[RetryHook] = (),
        idempotent: bool = False,
        verify: Callable[[U], bool] | None = None,
        event_handlers: EventHandlers | None = None,
    ) -> None:
        """Build a runner on an adapter's backend; see the adapters' ``factory`` helpers.

        ``event_handlers`` maps event classes to handlers, which receive the events an
        operation recorded with ``uow.record_event(...)`` once it has committed.
        """
        self._backend = backend
        self._event_handlers: EventHandlers = dict(event_handlers or {})
        self._policy = policy if policy is not None else RetryPolicy()
        self._hooks = tuple(hooks)
        self._idempotent = idempotent
        self._verify = verify
        self._clock: Callable[[], float] = time.monotonic

    @property
    def backend(self) -> Backend[U]:
        """The adapter's backend this runner opens units of work on."""
        return self._backend

    @property
    def policy(self) -> RetryPolicy:
        """The retry policy applied to every operation of this runner."""
        return self._policy

    def using(
        self,
        *,
        policy: RetryPolicy | None = None,
        idempotent: bool | None = None,
        verify: Callable[[U], bool] | None = None,
    ) -> Runner[U]:
        """Return a runner on the same backend with other settings (per-operation override).

        What happens when the connection is lost during COMMIT (outcome unknown):
        with commit markers enabled on the backend, the marker decides; otherwise
        ``verify(uow)``, run in a fresh unit of work, returns whether the operation's
        writes are there (committed: its result is returned; absent: it is rerun);
        otherwise ``idempotent=True`` reruns it; otherwise
        :class:`~uow.CommitOutcomeUnknown` is raised.
        """
        runner = Runner(
            self._backend,
            policy=self._policy if policy is None else policy,
            hooks=self._hooks,
            idempotent=self._idempotent if idempotent is None else idempotent,
            verify=self._verify if verify is None else verify,
            event_handlers=self._event_handlers,
        )
        runner._clock = self._clock
        return runner

    def run(self, fn: Callable[Concatenate[U, P], R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(uow, *args, **kwargs)`` as one operation and return its result.

        Each attempt gets a fresh unit of work; the framework commits when ``fn``
        returns and rolls back when it raises. After the last attempt the original
        exception is raised, with :func:`uow.retry_details` telling how it ended.
        """
        for attempt in self.attempts(_name_of(fn)):
            with attempt as unit:
                result = fn(unit, *args, **kwargs)
        return result

    def operation(self, fn: Callable[Concatenate[U, P], R], /) -> Callable[P, R]:
        """Decorate a function taking a unit of work first; calling it runs it as an operation."""

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            return self.run(fn, *args, **kwargs)

        return wrapper

    def attempts(self, name: str = "attempts") -> Iterator[Attempt[U]]:
        """Yield attempts for inline code: ``for a in runner.attempts(): with a as uow: ...``.

        Inside a running operation on the same backend, yields one attempt that joins
        it: no new transaction, no commit, no retry of its own.
        """
        active = active_attempt.get()
        if active is not None and active.backend is self._backend:
            # Same backend object, so the unit is of this runner's unit type.
            yield JoinedAttempt(cast("U", active.unit))
            return
        loop = RetryLoop(self, name, nested=active is not None)
        retrying = tenacity.Retrying(
            sleep=sleep,
            retry=loop.retry,
            stop=loop.stop,
            wait=loop.wait,
            before_sleep=loop.before_sleep,
            reraise=True,
        )
        for manager in retrying:
            yield RetryingAttempt(loop, manager)

    def __repr__(self) -> str:
        policy = self._policy
        return f"Runner({self._backend!r}, attempts={policy.attempts}, timeout={policy.timeout})"


class RetryLoop(Generic[U]):
    """The state of one operation's retry loop; tenacity calls its methods."""

    def __init__(self, runner: Runner[U], name: str, *, nested: bool) -> None:
        self.runner = runner
        self.name = name
        self.nested = nested
        self.started = runner._clock()  # noqa: SLF001 -- the runner's own clock
        self.deadline = self.started + runner.policy.timeout
        self._judged: tuple[int, Classification, Decision] | None = None

    def elapsed(self) -> float:
        return self.runner._clock() - self.started  # noqa: SLF001

    def judge(self, state: tenacity.RetryCallState) -> tuple[Classification, Decision]:
        """Classify the attempt's failure and decide, once per attempt.

        tenacity skips ``retry`` for its own ``TryAgain``; judging here on first use,
        whichever callback comes first, keeps every attempt inside the policy's bounds.
        """
        if self._judged is not None and self._judged[0] == state.attempt_number:
            return self._judged[1], self._judged[2]
        assert state.outcome is not None  # noqa: S101 -- tenacity asks after an outcome
        error = state.outcome.exception()
        if self.nested:  # only the outermost operation retries
            classification = Classification(ErrorKind.PERMANENT)
            decision = Decision(retry=False, wait=0.0, max_attempts=1, reason="nested")
        else:
            classification = _classify(self.runner.backend, error)
            testing = get_testing()
            decision = decide(
                self.runner.policy,
                classification.kind,
                attempt=state.attempt_number,
                elapsed=self.elapsed(),
                jitter=_random.random(),
                attempts_cap=testing.attempts if testing.enabled else None,
            )
        self._judged = (state.attempt_number, classification, decision)
        return classification, decision

    def retry(self, state: tenacity.RetryCallState) -> bool:
        """Return whether the failure is of a retryable kind (bounds are for ``stop``)."""
        assert state.outcome is not None  # noqa: S101
        error = state.outcome.exception()
        if error is None:
            return False
        _, decision = self.judge(state)
        if decision.reason == "not retryable":
            # The caller handles this error; hooks still see it (metrics), the log does not.
            details = self.details(state, error)
            _attach(error, details)
            emit(details, self.runner._hooks, log=False)  # noqa: SLF001
        return decision.reason not in {"not retryable", "nested"}

    def stop(self, state: tenacity.RetryCallState) -> bool:
        """Stop when attempts or time ran out; log the give-up once."""
        _, decision = self.judge(state)
        if decision.retry:
            return False
        assert state.outcome is not None  # noqa: S101
        error = state.outcome.exception()
        if error is not None and not self.nested:
            details = self.details(state, error)
            _attach(error, details)
            emit(details, self.runner._hooks)  # noqa: SLF001
        return True

    def wait(self, state: tenacity.RetryCallState) -> float:
        return self.judge(state)[1].wait

    def before_sleep(self, state: tenacity.RetryCallState) -> None:
        assert state.outcome is not None  # noqa: S101
        error = state.outcome.exception()
        assert error is not None  # noqa: S101
        emit(self.details(state, error), self.runner._hooks)  # noqa: SLF001

    def details(self, state: tenacity.RetryCallState, error: BaseException) -> RetryDetails:
        classification, decision = self.judge(state)
        return RetryDetails(
            operation=self.name,
            attempt=state.attempt_number,
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
        )

    def commit_failed(
        self, error: BaseException, attempt: int, transaction: Transaction[U]
    ) -> BaseException | None:
        """Turn an error raised by COMMIT into the one the loop should see (None: committed)."""
        kind = _classify(self.runner.backend, error).kind
        if not commit_outcome_unknown(kind):
            return error  # the server answered: the transaction did not commit
        grace_deadline = max(self.deadline, self.runner._clock() + RESOLUTION_GRACE)  # noqa: SLF001
        outcome = resolve_commit(
            transaction,
            self.runner.backend,
            self.runner._verify,  # noqa: SLF001
            timeout=grace_deadline - self.runner._clock(),  # noqa: SLF001
        )
        log_resolution(self.name, attempt, outcome)
        if outcome.committed is True:
            return None
        if outcome.committed is False or self.runner._idempotent:  # noqa: SLF001
            return error
        unknown = CommitOutcomeUnknown(self.name, attempt)
        unknown.__cause__ = error  # as ``raise ... from error`` would chain it
        return unknown


def _classify(backend: Backend[Any], error: BaseException | None) -> Classification:
    """Classify, keeping the library's own errors and already-ended ones permanent."""
    if (
        error is None
        or not isinstance(error, Exception)
        or isinstance(error, UnitOfWorkError)
        or retry_details(error) is not None
    ):
        return Classification(ErrorKind.PERMANENT)
    return backend.classify(error)


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
    add_note = getattr(error, "add_note", None)
    if add_note is not None and (details.attempt > 1 or details.cause is not None):
        cause = "" if details.cause is None else f"; likely cause: {details.cause}"
        add_note(
            f"retrying-uow: operation {details.operation!r} gave up after attempt "
            f"{details.attempt}/{details.max_attempts} ({details.reason}, "
            f"kind={details.kind.value}, {details.elapsed:.3f} s){cause}"
        )


def _name_of(fn: Callable[..., object]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
