"""How a database plugs into the SQLAlchemy adapter: one small interface, one table.

The adapter itself knows nothing of MySQL or PostgreSQL. A database package (``adapters.mysql``,
``adapters.postgresql``) provides a [`DatabaseSupport`][adapters.sqlalchemy.DatabaseSupport]: it
classifies errors, bounds reads by the attempt's remaining time, reads what identifies a connection
for a lost-COMMIT lookup (and, where the database can tell, settles a lost COMMIT without a marker),
and names the statements that end a transaction on that database. Databases without a package of
their own (SQLite, and any other) get the generic rules of `adapters.sqlalchemy._generic`; the
statement rules every database shares are in `adapters.sqlalchemy._statements`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol

from adapters.sqlalchemy._generic import GENERIC

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Dialect, Engine
    from sqlalchemy.orm import Session

    from adapters.sqlalchemy._state import AttemptState
    from adapters.sqlalchemy._statements import Effect
    from uow import Classification
    from uow.testing import Fault

_SUPPORT_MODULES = {
    "mysql": "adapters.mysql",
    "mariadb": "adapters.mysql",
    "postgresql": "adapters.postgresql",
}
"""SQLAlchemy dialect name -> the package whose ``SUPPORT`` serves it."""


class DatabaseSupport(Protocol):
    """What the SQLAlchemy adapter needs to know about one database."""

    @property
    def name(self) -> str:
        """The database's name, for messages."""

    def classify(self, error: BaseException) -> Classification:
        """Say what an error means for the operation; anything unknown is permanent."""

    def install(self, engine: Engine) -> None:
        """Add what the database needs on an engine the adapter uses (idempotent)."""

    def bound_connect(self, dialect: Dialect, params: dict[str, Any], seconds: float) -> None:
        """Bound the connect and login of a new connection to ``seconds``."""

    def bound_reads(self, dialect: Dialect, dbapi_connection: Any, seconds: float) -> Any:
        """Bound every read on an open connection; return an undo callable, or ``None``."""

    def socket_of(self, dialect: Dialect, dbapi_connection: Any) -> int | None:
        """Return the socket of a connection whose reads cannot be bounded once it is open.

        The adapter's watchdog shuts that socket down when an attempt's deadline passes
        with a statement in flight. ``None`` when the driver bounds its own reads.
        """

    def begin(self, connection: Connection, state: AttemptState) -> None:
        """At the attempt's BEGIN: read what the lookup of a lost COMMIT needs."""

    def effect(self, keyword: str, statement: str) -> tuple[Effect, str]:
        """Say what a statement does to the transaction; the ``str`` names it for messages."""

    def cause(self, error: BaseException, state: AttemptState | None) -> str | None:
        """Name the likely cause of a lost connection (idle past a server timeout, ...)."""

    def fault_error(self, dialect: Dialect, fault: Fault) -> Exception:
        """Return the driver's own error for an injected fault (not yet wrapped)."""

    def in_transaction(self, dbapi_connection: Any) -> bool:
        """Tell whether the driver knows a transaction is open (``True`` when it cannot tell)."""

    def before_commit(self, session: Session, state: AttemptState) -> None:
        """Just before the runner's COMMIT of a transaction that wrote (after the flush).

        Refuse a COMMIT the database would not honour (raise), and read what
        [`outcome`][adapters.sqlalchemy.DatabaseSupport.outcome] needs to settle a lost COMMIT
        without a marker. Its connection is ``session.connection()``, for a support that needs one.
        """

    def outcome(self, engine: Engine, state: AttemptState, seconds: float) -> bool | None:
        """After a lost COMMIT without a marker: tell whether it was applied.

        ``None`` when the database cannot tell; called on a fresh connection of
        ``engine`` (if any is needed) within ``seconds``.
        """

    def settle(self, connection: Connection, state: AttemptState, seconds: float) -> None:
        """Before a marker lookup: settle the original transaction, bound the locking read.

        End the original transaction if the server still holds it, and make the
        lookup's locking read wait at most ``seconds``.
        """

    def lean(self, engine: Engine, connect_args: dict[str, Any]) -> None:
        """Add what [`create_engine`][adapters.sqlalchemy.create_engine] adds for this database."""


def support_for(dialect: Dialect) -> DatabaseSupport:
    """Return the support of a dialect's database (generic when it has no package)."""
    module = _SUPPORT_MODULES.get(dialect.name)
    if module is None:
        return GENERIC
    support: DatabaseSupport = importlib.import_module(module).SUPPORT
    return support
