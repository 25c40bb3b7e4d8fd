"""The retry decision, free of I/O so that the sync and async runners share it."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from uow._kinds import ErrorKind
    from uow._policy import RetryPolicy


class Reason(enum.StrEnum):
    """Why an operation stopped after a failed attempt (``WILL_RETRY`` when it did not).

    A str-valued enum: ``details.reason == "attempts exhausted"`` keeps working, and
    hooks can match on members.
    """

    WILL_RETRY = ""
    """The operation is rerun."""
    NOT_RETRYABLE = "not retryable"
    """The error's kind is never retried (an ``IntegrityError``, a bug, ...)."""
    ATTEMPTS_EXHAUSTED = "attempts exhausted"
    """The error's kind allows no more attempts."""
    TIME_BUDGET_EXHAUSTED = "time budget exhausted"
    """The next attempt could not start within the operation's time budget."""
    RETRY_BUDGET_EXHAUSTED = "retry budget exhausted"
    """The process has made too many retries lately (see ``RetryPolicy.retry_budget``)."""
    NESTED = "nested"
    """The operation joined an outer one, which alone decides about reruns."""


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether to rerun after a failed attempt, and how long to wait first."""

    retry: bool
    wait: float
    max_attempts: int | None
    """The most attempts the error's kind allows (``None``: bounded by time only)."""
    reason: Reason


def decide(
    policy: RetryPolicy,
    kind: ErrorKind,
    *,
    attempt: int,
    elapsed: float,
    jitter: float,
    attempts_cap: int | None = None,
) -> Decision:
    """Decide what follows failed attempt number ``attempt`` (from 1).

    ``elapsed`` is the time since the operation started, ``jitter`` a random number
    in [0, 1), ``attempts_cap`` an extra cap on attempts (the testing switch's).
    """
    max_attempts = policy.max_attempts(kind)
    if attempts_cap is not None:
        max_attempts = attempts_cap if max_attempts is None else min(max_attempts, attempts_cap)
    if not policy.for_kind(kind).retry:
        return Decision(
            retry=False, wait=0.0, max_attempts=max_attempts, reason=Reason.NOT_RETRYABLE
        )
    if max_attempts is not None and attempt >= max_attempts:
        return Decision(
            retry=False, wait=0.0, max_attempts=max_attempts, reason=Reason.ATTEMPTS_EXHAUSTED
        )
    wait = policy.backoff(kind, attempt, jitter)
    if elapsed + wait >= policy.timeout:
        return Decision(
            retry=False, wait=0.0, max_attempts=max_attempts, reason=Reason.TIME_BUDGET_EXHAUSTED
        )
    return Decision(retry=True, wait=wait, max_attempts=max_attempts, reason=Reason.WILL_RETRY)
