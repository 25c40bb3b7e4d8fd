"""The state the adapter keeps: one object per attempt, one per pooled connection.

An attempt's `AttemptState` lives in its Session's ``info`` and, while the
attempt holds a connection, in that connection's `ConnectionState`. Every
listener of the adapter reads them through the two accessors below; nothing else
is kept in ``info`` dictionaries.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.orm import Session

    from adapters.sqlalchemy._databases import DatabaseSupport
    from uow import AttemptInfo

KEY = "retrying_uow"
"""The one key of the adapter in ``Session.info`` and in a pooled connection's ``info``."""


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


@dataclass(eq=False, slots=True)
class AttemptState:
    """What the adapter knows of one attempt's transaction."""

    attempt: AttemptInfo
    support: DatabaseSupport
    errors: list[BaseException] = field(default_factory=list)
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
    warned: set[str] = field(default_factory=set)
    undo_read_bound: Callable[[], None] | None = None
    fd: int | None = None
    """The socket the watchdog shuts down at the deadline (drivers that cannot bound reads)."""
    origin_alive_at: float = 0.0
    """``time.time()`` when the connection was known alive (its attempt began)."""
    transaction_id: object = None
    """What identifies the transaction on the server, where the database can say (PostgreSQL)."""

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


def attempt_of_session(session: Session) -> AttemptState | None:
    """Return the attempt a Session belongs to (``None``: a session of the user's own)."""
    state = session.info.get(KEY)
    return state if isinstance(state, AttemptState) else None


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
