"""One attempt of an operation: a fresh unit of work, committed or rolled back, closed.

The sync [`Attempt`][uow.Attempt] and the async [`AsyncAttempt`][uow.AsyncAttempt] differ only in
how they drive the shared end-of-attempt script (`uow._lifecycle.finish`).
"""

from __future__ import annotations

import asyncio
import enum
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Generic, Literal, NamedTuple, TypeVar

from uow._commit import NO_LIMIT, AttemptLimit
from uow._errors import BlockFormError, NestingError
from uow._lifecycle import finish
from uow._script import run_async, run_sync

if TYPE_CHECKING:
    from contextvars import Token
    from types import TracebackType

    from uow._commit import Checker
    from uow._loop import RetryLoop
    from uow._names import Flavour
    from uow._script import Script
    from uow._settings import RunnerSettings

U = TypeVar("U")


class ActiveAttempt(NamedTuple):
    """The attempt running in the current context, so that nested operations can join it."""

    backend: Any
    transaction: Any
    flavour: Flavour
    task: object
    """The asyncio task running it (``None`` for sync code): other tasks may not share it."""


active_attempt: ContextVar[ActiveAttempt | None] = ContextVar("retrying_uow_active", default=None)


def joined_unit(backend: Any, settings: RunnerSettings, flavour: Flavour, name: str) -> Any:
    """Return the unit of work a new operation joins, or ``None`` when it runs on its own.

    Inside a running operation on the same database (same runner, or a runner on the
    same engine or store), the new one joins: no transaction, commit or retry of its
    own, so attempts never multiply. Anything else raises [`NestingError`][uow.NestingError],
    unless the runner was declared ``independent``.
    """
    active = active_attempt.get()
    if active is None or settings.independent:
        return None
    where = f"operation {name!r} was started inside another operation"
    if active.flavour != flavour:
        msg = f"{where} of the {active.flavour} runner; a {flavour} runner cannot join it " + (
            "(it would block the event loop): await the async runner instead"
            if flavour == "sync"
            else "(it cannot share a sync session)"
        )
        raise NestingError(msg)
    if active.task is not _current_task():
        msg = (
            f"{where} from a task of its own: concurrent tasks cannot share the outer "
            "operation's session; await nested operations in the outer task, or declare the "
            "runner independent (`runner.using(independent=True)`)"
        )
        raise NestingError(msg)
    if active.backend is backend:
        return active.transaction.unit
    if active.backend.database is backend.database:
        return backend.join(active.transaction)
    msg = (
        f"{where} on another database: it would commit on its own, and a rerun of the outer "
        "operation would repeat it. Run it after the outer operation, or declare it "
        "independent (`runner.using(independent=True)`) if a repeat is harmless"
    )
    raise NestingError(msg)


def _current_task() -> object:
    # asyncio's own cheap check (exported by asyncio.events): sync code has no running
    # loop, and catching current_task()'s RuntimeError would cost it more than the rest.
    if asyncio._get_running_loop() is None:  # noqa: SLF001 -- see above
        return None
    return asyncio.current_task()


def _cancel_requests() -> int:
    """Return the current task's count of pending cancellation requests."""
    task = asyncio.current_task()
    return 0 if task is None else task.cancelling()


class _State(enum.Enum):
    NEW = "new"
    ENTERED = "entered"
    DONE = "done"


class _AttemptCore(Generic[U]):
    """What both kinds of attempt do: open the transaction, end it, report the outcome."""

    __slots__ = ("_checker", "_error", "_loop", "_state", "_token", "_transaction", "number")

    def __init__(self, loop: RetryLoop, number: int, checker: Checker) -> None:
        self._loop = loop
        self._checker = checker
        self.number = number
        """Attempt number, from 1."""
        self._transaction: Any = None
        self._token: Token[ActiveAttempt | None] | None = None
        self._state = _State.NEW
        self._error: BaseException | None = None

    def _open(self, flavour: Flavour) -> U:
        if self._state is not _State.NEW:
            msg = f"attempt {self.number} of {self._loop.name!r} was entered twice"
            raise BlockFormError(msg)
        self._transaction = self._loop.backend.begin(self._loop.attempt_info(self.number))
        self._token = active_attempt.set(
            ActiveAttempt(self._loop.backend, self._transaction, flavour, _current_task())
        )
        self._state = _State.ENTERED
        unit: U = self._transaction.unit
        return unit

    def _ending(
        self, error: BaseException | None, limit: AttemptLimit = NO_LIMIT
    ) -> Script[BaseException | None]:
        # Leave the context first: a verification or a nested commit resolution that
        # runs from here is not part of this attempt any more.
        if self._token is not None:
            active_attempt.reset(self._token)
            self._token = None
        self._state = _State.DONE
        return finish(self._loop, self.number, self._transaction, error, self._checker, limit=limit)

    def outcome(self) -> BaseException | None:
        """Return the error that ended the attempt (``None``: committed); check it was used."""
        if self._state is _State.NEW:
            msg = (
                f"attempt {self.number} of {self._loop.name!r} was never entered: the loop "
                "body must run `with attempt as uow:` (or `async with`)"
            )
            raise BlockFormError(msg)
        if self._state is _State.ENTERED:
            msg = (
                f"attempt {self.number} of {self._loop.name!r} was entered but never left; "
                "enter it only with a `with` block"
            )
            raise BlockFormError(msg)
        return self._error

    def abandoned(self) -> Script[None]:
        """Roll back and close an attempt that was entered but never left."""
        if self._state is _State.ENTERED:
            yield from self._ending(BlockFormError("the attempt was never left"))


class Attempt(_AttemptCore[U]):
    """One attempt of an operation: a context manager yielding a fresh unit of work.

    Leaving the block normally flushes and commits; leaving it with an exception
    rolls back. Either way the unit of work is closed, and the loop decides whether
    another attempt follows.
    """

    __slots__ = ()

    def __enter__(self) -> U:
        return self._open("sync")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[True]:
        self._error = run_sync(self._ending(exc))
        return True  # the loop re-raises it when no retry follows


class AsyncAttempt(_AttemptCore[U]):
    """One attempt of an async operation: ``async with attempt as uow: ...``.

    The attempt runs under ``asyncio.timeout`` until the operation's deadline, so its
    time budget bounds every wait, with any driver (aiomysql has no read timeout of
    its own). When the budget runs out, the attempt is rolled back and ends with
    ``TimeoutError``; if that happened during COMMIT, the outcome is settled as for a
    lost COMMIT (the server may still commit). Any other cancellation propagates as it is,
    also one that comes while the budget's own is being handled: as ``asyncio.timeout``
    does, the attempt tells its own cancellation from the others by the task's count of
    cancellation requests. A cancellation that reached the operation but never came out
    of it (on Python 3.11, ``asyncio.wait_for`` drops one that lands just as what it waits
    for completes, and asyncmy reads through it) still cancels the attempt: it is rolled
    back, never committed.
    """

    __slots__ = ("_cancelling", "_timer")

    async def __aenter__(self) -> U:
        unit: U = self._open("async")
        self._cancelling = _cancel_requests()
        remaining = self._loop.deadline - self._loop.settings.clock()
        self._timer = asyncio.timeout(max(remaining, 0.0))
        await self._timer.__aenter__()
        return unit

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[True]:
        timer = self._timer
        if not isinstance(exc, asyncio.CancelledError) and _cancel_requests() > self._cancelling:
            dropped = asyncio.CancelledError("a cancellation that did not come out of the body")
            dropped.__context__ = exc
            exc = dropped
        taken: asyncio.CancelledError | None = None
        try:
            limit = AttemptLimit(ran_out=timer.expired, extend=self._extend)
            error = await run_async(self._ending(exc, limit))
        except asyncio.CancelledError as cancelled:  # cut short while cleaning up
            if not timer.expired():
                raise
            # The body's own error stays what it was: only a cancellation of the body, or
            # of the cleanup after it returned, is the budget running out.
            taken = cancelled
            error = cancelled if exc is None or isinstance(exc, asyncio.CancelledError) else exc
        finally:
            await timer.__aexit__(None, None, None)  # takes its cancellation back, if it fired
        cancelled_from_outside = _cancel_requests() > self._cancelling
        if cancelled_from_outside and (
            timer.expired() or not isinstance(error, asyncio.CancelledError)
        ):
            # That request is not the budget's to take, nor lost in the cleanup: one still
            # pending is delivered by the sleep, one already taken is raised again.
            await asyncio.sleep(0)
            raise taken or asyncio.CancelledError()
        if timer.expired() and isinstance(error, asyncio.CancelledError):
            error = self._loop.budget_ran_out(self.number, error)
        self._error = error
        return True  # the loop re-raises it when no retry follows

    def _extend(self, until: float) -> None:
        """Let the settlement of a lost COMMIT run until ``until`` (the runner's clock)."""
        if self._timer.expired():
            return  # its cancellation was delivered already: nothing more will cut it short
        remaining = max(until - self._loop.settings.clock(), 0.0)
        self._timer.reschedule(asyncio.get_running_loop().time() + remaining)


class JoinedAttempt(Generic[U]):
    """The single attempt of a nested operation: the outer unit of work, no commit, no retry."""

    __slots__ = ("_unit", "number")

    def __init__(self, unit: U) -> None:
        self._unit = unit
        self.number = 1

    def __enter__(self) -> U:
        return self._unit

    def __exit__(self, *exc_info: object) -> Literal[False]:
        return False

    async def __aenter__(self) -> U:
        return self._unit

    async def __aexit__(self, *exc_info: object) -> Literal[False]:
        return False
