"""After a connection was lost during COMMIT: find out whether the server committed.

A COMMIT whose reply never arrived may or may not have been applied. Rerunning
blindly can write twice; giving up can lose a write the caller believes failed.
A transaction that wrote nothing has no such question: it is rerun like any lost
connection. For one that wrote, three sources can tell, tried in this order: the
adapter's commit marker (a row written in the same transaction, looked up with a
locking read), the operation's own verification (run in a fresh unit of work), and
nothing, in which case ``idempotent`` allows a rerun and otherwise
[`CommitOutcomeUnknown`][uow.CommitOutcomeUnknown] is raised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from uow._errors import CommitOutcomeUnknown
from uow._hooks import logger
from uow._kinds import commit_outcome_unknown

if TYPE_CHECKING:
    from uow._loop import RetryLoop
    from uow._script import Script

RESOLUTION_GRACE = 1.0
"""Seconds a resolution may take even when the operation's time budget is spent."""

Checker = Callable[[float], Callable[[Callable[[Any], object]], object]]
"""Given a timeout, returns the ``run`` of a fresh runner for a verification."""


def _never() -> bool:
    return False


def _unlimited(_until: float) -> None:
    return None


@dataclass(frozen=True, slots=True)
class AttemptLimit:
    """An attempt's own time limit, as the settlement of a lost COMMIT meets it.

    Async attempts run under ``asyncio.timeout`` until the operation's deadline: a COMMIT
    it cut short is settled like a lost one (``ran_out``), and the settlement's grace past
    the deadline moves that timeout (``extend``, given the clock's time it may run until).
    Sync attempts have no such limit.
    """

    ran_out: Callable[[], bool] = _never
    extend: Callable[[float], None] = _unlimited


NO_LIMIT = AttemptLimit()


@dataclass(frozen=True, slots=True)
class CommitOutcome:
    """What was learnt about a lost COMMIT: ``committed`` is ``None`` when unknown."""

    committed: bool | None
    source: str
    """``"commit marker"``, ``"verification"`` or ``"none"``."""
    error: BaseException | None = None
    """Why the source could not tell, when it tried and failed."""


def after_failed_commit(
    loop: RetryLoop,
    number: int,
    transaction: Any,
    error: BaseException,
    checker: Checker,
    *,
    limit: AttemptLimit = NO_LIMIT,
) -> Script[BaseException | None]:
    """Turn an error raised by COMMIT into the one the loop should see (``None``: committed).

    Runs after the attempt was closed, so the lost connection is back with the pool. A
    COMMIT cut short by the operation's own time budget may still commit on the server
    (a late commit): it is settled like a lost one. Any other cancellation propagates.
    """
    if limit.ran_out() and isinstance(error, asyncio.CancelledError):
        error = loop.budget_ran_out(number, error)
    elif not commit_outcome_unknown(loop.classify(error).kind):
        return error  # the server answered: the transaction did not commit
    if not transaction.wrote:
        return error  # nothing to have committed: a plain lost connection, rerun as such
    outcome = yield from _resolve(loop, transaction, checker, limit)
    log_resolution(loop.name, number, outcome)
    if outcome.committed is True:
        return None
    if outcome.committed is False or loop.settings.idempotent:
        return error
    unknown = CommitOutcomeUnknown(loop.name, number)
    unknown.__cause__ = error  # as ``raise ... from error`` would chain it
    return unknown


def _resolve(
    loop: RetryLoop, transaction: Any, checker: Checker, limit: AttemptLimit = NO_LIMIT
) -> Script[CommitOutcome]:
    """Ask the commit marker, then the verification, whether the transaction committed."""
    clock = loop.settings.clock
    deadline = max(loop.deadline, clock() + RESOLUTION_GRACE)
    limit.extend(deadline)
    try:
        marked = yield partial(transaction.committed, deadline - clock())
    except Exception as failed:  # noqa: BLE001 -- an unreachable server: the outcome stays unknown
        return CommitOutcome(None, "commit marker", failed)
    if marked is not None:
        return CommitOutcome(bool(marked), "commit marker")
    if loop.settings.verify is None:
        return CommitOutcome(None, "none")
    run = checker(max(deadline - clock(), 0.001))
    try:
        verified = yield partial(run, loop.settings.verify)
    except Exception as failed:  # noqa: BLE001 -- the check could not run: still unknown
        return CommitOutcome(None, "verification", failed)
    return CommitOutcome(bool(verified), "verification")


def log_resolution(operation: str, attempt: int, outcome: CommitOutcome) -> None:
    """Log how a lost COMMIT was resolved, with grep-able structured fields."""
    verdict = {True: "committed", False: "absent", None: "unknown"}[outcome.committed]
    fields = {
        "uow_operation": operation,
        "uow_attempt": attempt,
        "uow_commit_outcome": verdict,
        "uow_commit_source": outcome.source,
    }
    reason = "" if outcome.error is None else f" ({type(outcome.error).__name__})"
    logger.warning(
        "lost COMMIT of %s attempt %d: outcome %s (source: %s%s)",
        operation,
        attempt,
        verdict,
        outcome.source,
        reason,
        extra=fields,
    )
