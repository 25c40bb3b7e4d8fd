"""The end of an attempt, written once: commit what returned, roll back what raised, close.

The order matters and is the same for every adapter, sync or async:

1. An operation that returned, but whose code caught a transient database error, is
   not committed: that error is raised again (`RetryLoop.swallowed`).
2. ``prepare`` flushes, so every failure before COMMIT is known to roll back and is
   safe to rerun; only an error raised by COMMIT itself can leave the outcome unknown.
3. After a failure the attempt is rolled back; it is closed in every case.
4. A failed COMMIT is settled after the close (`uow._commit.after_failed_commit`);
   so is a COMMIT the operation's time budget cut short (async attempts' ``AttemptLimit``).
5. Events recorded by an attempt that committed are published.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from uow._commit import NO_LIMIT, AttemptLimit, after_failed_commit
from uow._events import publish

if TYPE_CHECKING:
    from uow._commit import Checker
    from uow._loop import RetryLoop
    from uow._script import Script


def finish(
    loop: RetryLoop,
    number: int,
    transaction: Any,
    error: BaseException | None,
    checker: Checker,
    *,
    limit: AttemptLimit = NO_LIMIT,
) -> Script[BaseException | None]:
    """End attempt ``number``; return the error the loop should judge, or ``None`` if committed."""
    seen = transaction.errors
    error = loop.swallowed(seen) if error is None else loop.deciding(error, seen)
    commit_error: BaseException | None = None
    try:
        if error is None:
            try:
                yield transaction.prepare
            except BaseException as failed:  # noqa: BLE001 -- handed to the retry loop
                error = loop.deciding(failed, seen)
            else:
                try:
                    yield transaction.commit
                except BaseException as failed:  # noqa: BLE001 -- handed to the retry loop
                    commit_error = failed
        if error is not None or commit_error is not None:
            yield transaction.rollback
    finally:
        yield transaction.close
    if commit_error is not None:
        error = yield from after_failed_commit(
            loop, number, transaction, commit_error, checker, limit=limit
        )
    if error is None:
        events = transaction.events
        if events:
            yield from publish(events, loop.settings.event_handlers, loop.name)
    return error
