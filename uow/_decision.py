"""The retry decision, free of I/O so that sync and async runners share it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from uow._kinds import ErrorKind
    from uow._policy import RetryPolicy


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether to rerun after a failed attempt, and how long to wait first."""

    retry: bool
    wait: float
    max_attempts: int
    reason: str
    """Why the operation stops (``""`` when it is retried)."""


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
        max_attempts = min(max_attempts, attempts_cap)
    if not policy.for_kind(kind).retry:
        return Decision(retry=False, wait=0.0, max_attempts=max_attempts, reason="not retryable")
    if attempt >= max_attempts:
        return Decision(
            retry=False, wait=0.0, max_attempts=max_attempts, reason="attempts exhausted"
        )
    wait = policy.backoff(kind, attempt, jitter)
    if elapsed + wait >= policy.timeout:
        return Decision(
            retry=False, wait=0.0, max_attempts=max_attempts, reason="time budget exhausted"
        )
    return Decision(retry=True, wait=wait, max_attempts=max_attempts, reason="")
