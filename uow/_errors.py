"""The library's own errors, all under :class:`UnitOfWorkError`.

Database errors are never wrapped: a caller (and any retry layer above) sees the
driver's ``OperationalError`` as it was raised. These classes describe only what
the library itself adds: misuse and an unknown commit outcome.
"""

from __future__ import annotations


class UnitOfWorkError(Exception):
    """Base class of every error raised by retrying-uow itself."""


class UnitOfWorkClosedError(UnitOfWorkError):
    """A unit of work (or a repository on it) was used after its attempt ended.

    Each attempt gets a fresh unit of work that lives only while the operation runs;
    keeping one for later is exactly the long-held session this library exists to
    prevent.
    """


class CommitOutcomeUnknown(UnitOfWorkError):
    """The connection was lost while COMMIT was in flight.

    The server may or may not have committed, so rerunning could write twice. The
    driver's error is chained as ``__cause__``. Declare the operation idempotent,
    give it a verification, or enable commit markers to have it resolved instead.
    """

    def __init__(self, operation: str, attempt: int) -> None:
        super().__init__(
            f"operation {operation!r}: the connection was lost during COMMIT of attempt "
            f"{attempt}; the transaction may or may not have committed, so it was not rerun"
        )
        self.operation = operation
        self.attempt = attempt
