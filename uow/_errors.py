"""The library's own errors, all under [`UnitOfWorkError`][uow.UnitOfWorkError].

Database errors are never wrapped: a caller (and any retry layer above) sees the
driver's ``OperationalError`` as it was raised. These classes describe only what
the library itself adds: an unknown commit outcome, and misuse that would otherwise
lose a write or make it twice.
"""

from __future__ import annotations


class UnitOfWorkError(Exception):
    """Base class of every error raised by retrying-uow itself."""


class UnitOfWorkClosedError(UnitOfWorkError):
    """A unit of work (or its session or a repository on it) was used after its attempt ended.

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


class TransactionControlError(UnitOfWorkError):
    """Code inside an operation tried to end or restart the transaction the runner owns.

    ``session.commit()``, ``session.rollback()``, ``session.begin()``, ``session.close()``,
    a raw ``COMMIT``/``ROLLBACK``/``START TRANSACTION`` statement, or (on MySQL/MariaDB) DDL
    that commits implicitly: each would commit part of the operation on its own, so
    that a rerun writes it again, or drop earlier writes while the rest commits. The
    call is refused before anything is committed; savepoints
    (``session.begin_nested()``) stay allowed.
    """


class NestingError(UnitOfWorkError):
    """An operation was started inside another one that it cannot join.

    A nested operation on the same database joins the running unit of work. One on
    another database would commit on its own, and a rerun of the outer operation would
    repeat it; it must be declared independent to run that way.
    """


class BlockFormError(UnitOfWorkError):
    """The block form (``for attempt in runner.attempts(): with attempt as uow: ...``) was misused.

    ``return`` or ``break`` in the loop would leave it before a failed attempt is
    rerun, and an attempt that is never entered would make the loop spin.
    """
