"""One attempt of an operation: a fresh unit of work, committed or rolled back, closed."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from uow._events import publish
from uow._protocols import AttemptInfo

if TYPE_CHECKING:
    from types import TracebackType

    import tenacity

    from uow._protocols import Transaction
    from uow._runner import RetryLoop

U = TypeVar("U")


@dataclass(frozen=True, slots=True)
class ActiveAttempt:
    """The attempt running in the current context, so nested calls can join it."""

    backend: object
    unit: object


active_attempt: ContextVar[ActiveAttempt | None] = ContextVar("retrying_uow_active", default=None)


class Attempt(Generic[U]):
    """One attempt of an operation: a context manager yielding a fresh unit of work.

    Leaving the block normally flushes and commits; leaving it with an exception
    rolls back. Either way the unit of work is closed, and the loop decides whether
    another attempt follows.
    """

    number: int
    """Attempt number, from 1."""

    def __enter__(self) -> U:
        raise NotImplementedError

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        raise NotImplementedError


class RetryingAttempt(Attempt[U]):
    """An attempt of an outermost operation, reporting its outcome to tenacity."""

    def __init__(self, loop: RetryLoop[U], manager: tenacity.AttemptManager) -> None:
        self._loop = loop
        self._manager = manager
        self.number = manager.retry_state.attempt_number
        self._transaction: Transaction[U] | None = None
        self._token: Any = None

    def __enter__(self) -> U:
        loop = self._loop
        info = AttemptInfo(loop.name, self.number, loop.deadline, loop.runner.policy)
        self._transaction = self._loop.runner.backend.begin(info)
        self._token = active_attempt.set(
            ActiveAttempt(self._loop.runner.backend, self._transaction.unit)
        )
        return self._transaction.unit

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        # Leave the context first: whatever runs from here (a commit resolution, a
        # verification) is not nested in this attempt any more.
        active_attempt.reset(self._token)
        error = self._finish(exc)
        if error is None:
            assert self._transaction is not None  # noqa: S101 -- __enter__ ran
            publish(self._transaction.events, self._loop.runner._event_handlers, self._loop.name)  # noqa: SLF001
            return bool(self._manager.__exit__(None, None, None))
        return bool(self._manager.__exit__(type(error), error, error.__traceback__))

    def _finish(self, error: BaseException | None) -> BaseException | None:
        transaction = self._transaction
        assert transaction is not None  # noqa: S101 -- __enter__ ran
        commit_error: BaseException | None = None
        try:
            if error is None:
                try:
                    transaction.flush()
                except BaseException as flush_error:  # noqa: BLE001 -- handed to the retry loop
                    error = flush_error
                else:
                    try:
                        transaction.commit()
                    except BaseException as failed:  # noqa: BLE001 -- handed to the retry loop
                        commit_error = failed
            if error is not None or commit_error is not None:
                transaction.rollback()
        finally:
            transaction.close()
        if commit_error is not None:
            # Resolved after close, so the dead connection is back with the pool.
            return self._loop.commit_failed(commit_error, self.number, transaction)
        return error


class JoinedAttempt(Attempt[U]):
    """The single attempt of a nested call: the outer unit of work, no commit, no retry."""

    def __init__(self, unit: U) -> None:
        self._unit = unit
        self.number = 1

    def __enter__(self) -> U:
        return self._unit

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        return False
