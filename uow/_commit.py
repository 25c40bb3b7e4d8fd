"""After a connection was lost during COMMIT: find out whether the server committed.

A COMMIT whose reply never arrived may or may not have been applied. Rerunning
blindly can write twice; giving up can lose a write the caller believes failed.
Three sources can tell, tried in this order: the adapter's commit marker (a row
written in the same transaction, looked up with a locking read), the operation's
own verification (run in a fresh unit of work), and nothing (outcome unknown).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from uow._hooks import logger

if TYPE_CHECKING:
    from collections.abc import Callable

    from uow._protocols import Backend, Transaction

RESOLUTION_GRACE = 1.0
"""Seconds a resolution may take even when the operation's time budget is spent."""


@dataclass(frozen=True, slots=True)
class CommitOutcome:
    """What was learnt about a lost COMMIT: ``committed`` is ``None`` when unknown."""

    committed: bool | None
    source: str
    """``"commit marker"``, ``"verification"`` or ``"none"``."""
    error: BaseException | None = None
    """Why the source could not tell, when it tried and failed."""


def resolve_commit(
    transaction: Transaction[Any],
    backend: Backend[Any],
    verify: Callable[[Any], bool] | None,
    *,
    timeout: float,
) -> CommitOutcome:
    """Ask the commit marker, then the verification, whether the transaction committed."""
    try:
        marked = transaction.committed(timeout)
    except Exception as error:  # noqa: BLE001 -- an unreachable server: the outcome stays unknown
        return CommitOutcome(None, "commit marker", error)
    if marked is not None:
        return CommitOutcome(marked, "commit marker")
    if verify is None:
        return CommitOutcome(None, "none")
    # Imported here: the runner module imports this one.
    from uow._policy import RetryPolicy  # noqa: PLC0415
    from uow._runner import Runner  # noqa: PLC0415

    checker = Runner(backend, policy=RetryPolicy(timeout=max(timeout, 0.001)))
    try:
        verified = checker.run(verify)
    except Exception as error:  # noqa: BLE001 -- the verification could not run: still unknown
        return CommitOutcome(None, "verification", error)
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
