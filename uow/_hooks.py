"""What the runner tells the world about retries: log lines and hook records."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from uow._decision import Reason
    from uow._kinds import ErrorKind

logger = logging.getLogger("retrying_uow")
"""The library's logger: WARNING per scheduled retry, ERROR on give-up."""


@dataclass(frozen=True, slots=True)
class RetryDetails:
    """One failed attempt as seen by the runner, handed to hooks and kept on errors.

    On a scheduled retry ``will_retry`` is true and ``wait`` is the pause before the
    next attempt. On give-up ``will_retry`` is false and ``reason`` says why; the same
    record is reachable from the raised exception with [`uow.retry_details`][uow.retry_details].
    """

    operation: str
    attempt: int
    """Number of the attempt that failed, from 1."""
    max_attempts: int | None
    """The most attempts the error's kind allows; ``None`` when only time bounds it."""
    kind: ErrorKind
    errno: int | None
    error_type: str
    """Qualified class name of the error, e.g. ``sqlalchemy.exc.OperationalError``."""
    wait: float
    elapsed: float
    """Seconds since the operation's first attempt began."""
    will_retry: bool
    reason: Reason
    """Why the operation stopped (`Reason.WILL_RETRY`, ``""``, when it is retried)."""
    error: BaseException
    cause: str | None = None
    """The likely cause the adapter named, e.g. "idle 3.4 s in a transaction; ..."."""
    timeout: float | None = None
    """The operation's time budget in seconds."""

    def log_fields(self) -> dict[str, object]:
        """Return flat, structlog-friendly fields (no SQL, no parameters, no secrets)."""
        return {
            "uow_operation": self.operation,
            "uow_attempt": self.attempt,
            "uow_max_attempts": self.max_attempts,
            "uow_kind": self.kind.value,
            "uow_errno": self.errno,
            "uow_error_type": self.error_type,
            "uow_wait": round(self.wait, 3),
            "uow_elapsed": round(self.elapsed, 3),
            "uow_will_retry": self.will_retry,
            "uow_reason": self.reason.value,
            "uow_cause": self.cause,
        }


class RetryHook(Protocol):
    """A callable told about every failed attempt of an outermost operation.

    That is every scheduled retry (``will_retry``), every give-up after retries, and
    every error that is never retried (``reason == Reason.NOT_RETRYABLE``, e.g. an
    IntegrityError), which is logged by no one but the caller.
    """

    def __call__(self, details: RetryDetails, /) -> None:
        """Receive one record; exceptions it raises are logged, never propagated."""


def qualified_name(error: BaseException) -> str:
    """Return ``module.Class`` of an exception, the form people grep for."""
    cls = type(error)
    return f"{cls.__module__}.{cls.__qualname__}"


def describe(details: RetryDetails) -> str:
    """Return the human part shared by the retry and give-up log lines."""
    errno = "" if details.errno is None else f" errno={details.errno}"
    cause = "" if details.cause is None else f" cause={details.cause!r}"
    of = "" if details.max_attempts is None else f"/{details.max_attempts}"
    return (
        f"attempt {details.attempt}{of} failed: "
        f"kind={details.kind.value}{errno} error={details.error_type}{cause}"
    )


def emit(details: RetryDetails, hooks: tuple[RetryHook, ...], *, log: bool = True) -> None:
    """Log one record (unless ``log`` is false) and hand it to every hook.

    A failing hook is logged and never breaks the operation.
    """
    if log:
        _log(details)
    for hook in hooks:
        try:
            hook(details)
        except Exception:  # one hook's bug must not stop the others
            logger.exception("retry hook %s failed", _hook_name(hook))


def _hook_name(hook: object) -> str:
    name = getattr(hook, "__qualname__", None)
    return name if isinstance(name, str) else type(hook).__qualname__


def _log(details: RetryDetails) -> None:
    fields = details.log_fields()
    budget = "" if details.timeout is None else f" of {details.timeout:g}"
    if details.will_retry:
        logger.warning(
            "retrying %s: %s; next attempt in %.3f s (%.3f%s s of the time budget spent)",
            details.operation,
            describe(details),
            details.wait,
            details.elapsed,
            budget,
            extra=fields,
        )
    else:
        logger.error(
            "giving up on %s: %s; %s after %.3f s",
            details.operation,
            describe(details),
            details.reason.value,
            details.elapsed,
            extra=fields,
        )
