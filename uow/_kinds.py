"""Error kinds: what a failure means for the operation, whatever the driver called it."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ErrorKind(enum.StrEnum):
    """What a database error means for the operation that saw it.

    Adapters map driver errors to a kind (see ``adapters.mysql``); the retry policy
    decides per kind whether and how the whole operation is rerun.
    """

    DISCONNECT = "disconnect"
    """The connection died (2006, 2013, ...): the transaction is gone, rerun on a new one."""
    UNAVAILABLE = "unavailable"
    """The server cannot be reached or refuses connections (2003, 1040): back off, rerun."""
    DEADLOCK = "deadlock"
    """The server rolled the transaction back to break a deadlock (1213): rerun with jitter."""
    LOCK_WAIT = "lock_wait"
    """A lock wait timed out (1205): only the statement was undone; roll back all, rerun."""
    FAILOVER = "failover"
    """The server is read-only, shutting down or not the primary: drop the pool, rerun."""
    INTERRUPTED = "interrupted"
    """A statement was killed or timed out: it may still run or be the problem itself."""
    PERMANENT = "permanent"
    """Everything else, including every unknown error: never retried."""


@dataclass(frozen=True, slots=True)
class Classification:
    """An adapter's verdict on one exception: its kind and the server's error number."""

    kind: ErrorKind
    errno: int | None = None
    cause: str | None = None
    """The likely cause, when the adapter can name it (e.g. "idle 3.4 s in a transaction;
    server wait_timeout is 2 s"); shown in log lines and the error's notes."""


PERMANENT = Classification(ErrorKind.PERMANENT)
"""The verdict for anything an adapter does not recognise."""

# A failure *during* COMMIT of these kinds tells nothing about whether the server
# committed: the reply was lost, not the transaction. The others (deadlock, lock
# wait, unavailable) are answers from the server, so the transaction did not commit.
_OUTCOME_UNKNOWN_AT_COMMIT = frozenset(
    {ErrorKind.DISCONNECT, ErrorKind.FAILOVER, ErrorKind.INTERRUPTED}
)


def commit_outcome_unknown(kind: ErrorKind) -> bool:
    """Tell whether an error of this kind raised by COMMIT leaves the outcome unknown."""
    return kind in _OUTCOME_UNKNOWN_AT_COMMIT
