"""The unit of work owns the transaction: user code may not end or restart it.

An attempt's Session is an instance of a thin subclass of the user's session class
whose ``commit``, ``rollback``, ``begin``, ``close``, ``reset`` and ``invalidate``
raise [`TransactionControlError`][uow.TransactionControlError] while an operation runs (and
[`UnitOfWorkClosedError`][uow.UnitOfWorkClosedError] after it ended). Savepoints stay allowed:
``begin_nested()``. Raw statements that end a transaction are refused where they
are executed (see `adapters.sqlalchemy._listeners`).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from sqlalchemy import event
from sqlalchemy.orm import Session

from adapters.sqlalchemy._databases import attempt_of_session
from adapters.sqlalchemy._listeners import begin_attempt, refusal
from uow import UnitOfWorkClosedError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from adapters.sqlalchemy._databases import AttemptState

S = TypeVar("S", bound=Session)

REMEDIES = {
    "Session.commit()": (
        "the runner commits when the operation returns; to get generated ids before "
        "that, call uow.flush()"
    ),
    "Session.rollback()": (
        "raise an exception to roll the whole operation back; to undo only part of it, "
        "use a savepoint: `with uow.begin_nested(): ...`"
    ),
    "Session.begin()": (
        "the operation already runs in the runner's transaction; use "
        "`uow.begin_nested()` for a savepoint"
    ),
    "Session.close()": "the runner closes the session when the attempt ends",
    "Session.reset()": "the runner closes the session when the attempt ends",
    "Session.invalidate()": (
        "the runner discards the session when the attempt ends, and reruns the "
        "operation after a lost connection"
    ),
}


def check_call(session: Session, call: str) -> None:
    """Refuse ``call`` on an attempt's session unless the runner itself makes it."""
    state = attempt_of_session(session)
    if state is not None and not state.owner:
        refuse(state, call)


def refuse(state: AttemptState, call: str) -> NoReturn:
    """Raise the error for ``call`` on the session of ``state`` by anyone but the runner."""
    if state.ended:
        attempt = state.attempt
        msg = (
            f"{call} on the session of operation {attempt.operation!r} (attempt "
            f"{attempt.number}), which has ended; do the work inside an operation instead "
            "of keeping its session"
        )
        raise UnitOfWorkClosedError(msg)
    raise refusal(state, call, REMEDIES[call])


class OwnedTransaction(Session):
    """The calls that end or restart a Session's transaction, refused while an operation runs."""

    _retrying_uow_attempt: AttemptState | None = None
    """The attempt of this session (``_databases.bind_session`` sets it under this name)."""

    def commit(self) -> None:
        """Refused: the runner commits."""
        state = self._retrying_uow_attempt  # check_call, inlined: the runner's own commit
        if state is not None and not state.owner:
            refuse(state, "Session.commit()")
        super().commit()

    def rollback(self) -> None:
        """Refused: raise to roll back, or use a savepoint."""
        check_call(self, "Session.rollback()")
        super().rollback()

    def begin(self, nested: bool = False) -> Any:  # noqa: FBT001, FBT002 -- Session's signature
        """Refused except for savepoints (``begin_nested()``)."""
        if not nested:
            check_call(self, "Session.begin()")
        return super().begin(nested=nested)

    def close(self) -> None:
        """Refused: the runner closes the session."""
        state = self._retrying_uow_attempt  # check_call, inlined: the runner's own close
        if state is not None and not state.owner:
            refuse(state, "Session.close()")
        super().close()

    def reset(self) -> None:
        """Refused: the runner closes the session."""
        check_call(self, "Session.reset()")
        super().reset()

    def invalidate(self) -> None:
        """Refused: the runner discards the session."""
        check_call(self, "Session.invalidate()")
        super().invalidate()


_classes: dict[type[Session], type[Session]] = {}
_classes_lock = threading.Lock()


def attempt_session_class(base: type[S]) -> type[S]:
    """Return the attempts' subclass of ``base`` (made once per class)."""
    with _classes_lock:
        made = _classes.get(base)
        if made is None:
            bases: tuple[type, ...] = (
                (base,) if issubclass(base, OwnedTransaction) else (OwnedTransaction, base)
            )
            made = _classes[base] = type(f"Attempt{base.__name__}", bases, {})
            event.listen(made, "after_begin", _on_begin)
    return made  # type: ignore[return-value]


def _on_begin(session: Session, _transaction: object, connection: Connection) -> None:
    """At the BEGIN of an attempt's transaction: bind the attempt to its connection."""
    state = attempt_of_session(session)
    if state is not None:
        begin_attempt(state, connection)
