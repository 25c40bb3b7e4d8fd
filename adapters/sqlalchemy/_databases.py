"""How a database plugs into the SQLAlchemy adapter: one small interface, and the state it shares.

The adapter itself knows nothing of MySQL or PostgreSQL. A database package (``adapters.mysql``,
``adapters.postgresql``) provides a [`DatabaseSupport`][adapters.sqlalchemy.DatabaseSupport]: it
classifies errors, bounds reads by the attempt's remaining time, reads what identifies a connection
for a lost-COMMIT lookup (and, where the database can tell, settles a lost COMMIT without a marker),
and names the statements that end a transaction on that database. Databases without a package of
their own (SQLite, and any other) get the generic rules of `adapters.sqlalchemy._generic`; the
statement rules every database shares are in `adapters.sqlalchemy._statements`.

The state is what the adapter and a database's support both read and fill in: one
`AttemptState` per attempt, on its Session and, while the attempt holds a connection, in
that connection's `ConnectionState` (in its ``info``). Every listener of the adapter reads
them through the accessors at the end; nothing else is kept on sessions or connections.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Connection, Dialect, Engine
    from sqlalchemy.orm import Session

    from adapters.sqlalchemy._statements import Effect
    from uow import AttemptInfo, Classification
    from uow.testing import Fault


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
        """Bound every read on an open connection; return an undo callable, or ``None``.

        ``None`` says the driver cannot: the attempt does not ask again at each statement.
        """

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


KEY = "retrying_uow"
"""The one key of the adapter in a pooled connection's ``info``."""
_SESSION_ATTRIBUTE = "_retrying_uow_attempt"
"""The one attribute of the adapter on an attempt's Session."""


@dataclass(eq=False, slots=True)
class ConnectionState:
    """What the adapter knows of one pooled DBAPI connection, across attempts."""

    wait_timeout: float | None = None
    """The server's ``wait_timeout`` for this connection (MySQL/MariaDB), read once."""
    node: str | None = None
    """``hostname:port`` of the server it is connected to, read once."""
    server_id: int | None = None
    """The server's id of the connection (MySQL ``CONNECTION_ID()``, PostgreSQL backend pid)."""
    facts_read: bool = False
    checked_in: float | None = None
    """``time.monotonic()`` when an attempt last gave it back."""
    clean: bool = False
    """Its transaction was just committed or rolled back by an attempt: no reset needed."""
    attempt: AttemptState | None = None
    """The attempt holding it now, if any."""


@dataclass(eq=False, init=False)
class AttemptState:
    """What the adapter knows of one attempt's transaction.

    Made for every attempt, so its ``__init__`` sets only what has no default: the
    defaults are the class's until an attempt changes them.
    """

    attempt: AttemptInfo
    support: DatabaseSupport
    errors: list[BaseException]
    """Database errors raised on the attempt's connection, even those its code caught."""
    connection: ConnectionState | None = None
    dbapi_connection: Any = None
    statements: int = 0
    wrote: bool = False
    """Whether a statement that writes ran in the transaction."""
    owner: bool = False
    """The runner itself is ending the transaction (its commit or rollback)."""
    ended: bool = False
    """The attempt is over: its session may not be used any more."""
    began: float = 0.0
    last_activity: float = 0.0
    warned: tuple[str, ...] = ()
    """The guard's warnings given so far (each once per attempt)."""
    idle_limit: float = math.inf
    """Seconds idle after which the guard has something to say (the server's wait_timeout)."""
    open_limit: float = math.inf
    """Seconds open after which the guard has something to say (``warn_transaction_after``)."""
    undo_read_bound: Callable[[], None] | None = None
    fd: int | None = None
    """The socket the watchdog shuts down at the deadline (drivers that cannot bound reads)."""
    origin_alive_at: float = 0.0
    """``time.time()`` when the connection was known alive (its attempt began)."""
    transaction_id: object = None
    """What identifies the transaction on the server, where the database can say (PostgreSQL)."""

    def __init__(self, attempt: AttemptInfo, support: DatabaseSupport) -> None:
        """Start the state of one attempt, served by ``support``."""
        self.attempt = attempt
        self.support = support
        self.errors = []

    def start(self, connection: ConnectionState, dbapi_connection: Any) -> None:
        """Bind the attempt to the connection its transaction began on."""
        now = time.monotonic()
        self.connection = connection
        self.dbapi_connection = dbapi_connection
        self.began = self.last_activity = now
        self.origin_alive_at = time.time()
        connection.attempt = self

    def release(self) -> None:
        """Unbind from the connection (its transaction ended): restore what was changed."""
        connection = self.connection
        if connection is None or connection.attempt is not self:
            return
        connection.attempt = None
        connection.clean = True
        connection.checked_in = time.monotonic()
        if self.undo_read_bound is not None:
            undo, self.undo_read_bound = self.undo_read_bound, None
            undo()


def bind_session(session: Session, state: AttemptState) -> None:
    """Make ``session`` the session of the attempt of ``state``."""
    setattr(session, _SESSION_ATTRIBUTE, state)


def attempt_of_session(session: Session) -> AttemptState | None:
    """Return the attempt a Session belongs to (``None``: a session of the user's own)."""
    state = getattr(session, _SESSION_ATTRIBUTE, None)
    return state if type(state) is AttemptState else None


def connection_state(info: dict[Any, Any]) -> ConnectionState:
    """Return the state of a pooled connection from its ``info``, creating it on first use."""
    state = info.get(KEY)
    if not isinstance(state, ConnectionState):
        state = info[KEY] = ConnectionState()
    return state


def attempt_of_connection(info: dict[Any, Any]) -> AttemptState | None:
    """Return the attempt holding a pooled connection, from its ``info`` (no creation)."""
    state = info.get(KEY)
    return state.attempt if isinstance(state, ConnectionState) else None
