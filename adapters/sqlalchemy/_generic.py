"""The rules for databases without a package of their own: SQLite, and any other.

Only what SQLAlchemy itself detects as a disconnect is transient, plus SQLite's
"database is locked" (another connection holds the write lock: a lock wait, rerun);
everything else is permanent. Nothing bounds reads and nothing is known about the
server, so a lost COMMIT is settled only by commit markers or a verification.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import DBAPIError

from adapters.sqlalchemy._statements import Effect, generic_effect
from uow import Classification, ErrorKind

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Dialect, Engine
    from sqlalchemy.orm import Session

    from adapters.sqlalchemy._databases import AttemptState
    from uow.testing import Fault

_SQLITE_CLOSED = "Cannot operate on a closed database."  # what its dialect calls a disconnect
_SQLITE_LOCKED = "database is locked"
_SQLITE_BUSY = 5  # SQLITE_BUSY, the error code of "database is locked"


def classify_generic(error: BaseException) -> Classification:
    """Classify errors of databases without a table of their own (SQLite, ...).

    A disconnect that SQLAlchemy detected is transient; SQLite's "database is locked"
    is a lock wait; everything else is permanent.
    """
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return Classification(ErrorKind.DISCONNECT)
        original = error.orig
        code = getattr(original, "sqlite_errorcode", None)
        if code == _SQLITE_BUSY or _SQLITE_LOCKED in str(original):
            return Classification(ErrorKind.LOCK_WAIT, code if isinstance(code, int) else None)
    return Classification(ErrorKind.PERMANENT)


class GenericSupport:
    """The [`DatabaseSupport`][adapters.sqlalchemy.DatabaseSupport] of SQLite and others."""

    name = "generic"

    def classify(self, error: BaseException) -> Classification:
        """See [`classify_generic`][adapters.sqlalchemy.classify_generic]."""
        return classify_generic(error)

    def install(self, engine: Engine) -> None:
        """Nothing to add."""

    def bound_connect(self, dialect: Dialect, params: dict[str, Any], seconds: float) -> None:
        """Nothing to bound: no driver option is known."""

    def bound_reads(self, dialect: Dialect, dbapi_connection: Any, seconds: float) -> Any:  # noqa: ARG002
        """Nothing to bound: no driver option is known."""
        return None

    def socket_of(self, dialect: Dialect, dbapi_connection: Any) -> int | None:  # noqa: ARG002
        """Nothing to watch: SQLite has no socket, other drivers are unknown."""
        return None

    def begin(self, connection: Connection, state: AttemptState) -> None:
        """Nothing to read."""

    def effect(self, keyword: str, statement: str) -> tuple[Effect, str]:
        """Apply the generic statement rules."""
        return generic_effect(keyword, statement)

    def cause(self, error: BaseException, state: AttemptState | None) -> str | None:  # noqa: ARG002
        """No cause can be named."""
        return None

    def fault_error(self, dialect: Dialect, fault: Fault) -> Exception:
        """SQLite: a lost connection, or "database is locked"; nothing else can be simulated."""
        dbapi: Any = dialect.loaded_dbapi
        if dialect.name == "sqlite" and fault.kind is ErrorKind.DISCONNECT:
            closed: Exception = dbapi.ProgrammingError(_SQLITE_CLOSED)
            return closed
        if dialect.name == "sqlite" and fault.kind is ErrorKind.LOCK_WAIT:
            locked: Exception = dbapi.OperationalError(_SQLITE_LOCKED)
            return locked
        msg = (
            f"{fault} cannot be simulated on {dialect.name}: SQLite simulates a lost "
            "connection or a lock wait (database is locked)"
        )
        raise NotImplementedError(msg)

    def before_commit(self, session: Session, state: AttemptState) -> None:
        """Nothing to check or read."""

    def outcome(self, engine: Engine, state: AttemptState, seconds: float) -> bool | None:  # noqa: ARG002
        """Nothing can tell: only commit markers or a verification settle a lost COMMIT."""
        return None

    def settle(self, connection: Connection, state: AttemptState, seconds: float) -> None:
        """Nothing to settle: the lookup's locking read waits for the original transaction."""

    def lean(self, engine: Engine, connect_args: dict[str, Any]) -> None:
        """Nothing to add."""

    def in_transaction(self, dbapi_connection: Any) -> bool:
        """sqlite3 says; other drivers are assumed to have one open."""
        in_transaction = getattr(dbapi_connection, "in_transaction", None)
        return in_transaction if isinstance(in_transaction, bool) else True


GENERIC = GenericSupport()
"""The one instance."""
