"""What the unit of work does to the connections it borrows from the user's pool.

- Reads are bounded by the operation's remaining time budget (PyMySQL), so a silent
  network ends the attempt instead of blocking it forever; that includes the connect
  and login of a new connection opened for an attempt.
- The server's id of the connection is noted, so a lost COMMIT can be settled.
- The transaction guard (``adapters.guard``) watches the attempt's transaction.
- Database errors raised inside the attempt are remembered, so an attempt whose code
  caught a transient error (a deadlock, a lost connection) is never committed.
- On engines made by :func:`create_engine`, a connection known to be clean (its
  transaction just committed or rolled back) goes back to the pool without the
  redundant ROLLBACK that SQLAlchemy's reset-on-return would send.

Everything applies to the sessions of attempts only; the user's own sessions and
connections on the same engine are left as they are.
"""

from __future__ import annotations

import time
import weakref
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

import sqlalchemy
from sqlalchemy import event

from adapters import guard, mysql

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy.engine import Connection, Engine, ExceptionContext
    from sqlalchemy.orm import Session, sessionmaker
    from sqlalchemy.pool import PoolResetState

ATTEMPT = "retrying_uow_attempt"
"""``Session.info`` key of the attempt (``uow.AttemptInfo``) a session belongs to."""
_ORIGIN = "retrying_uow_origin"
_CONNECTION = "retrying_uow_connection"
_UNBOUNDED_READS = "retrying_uow_read_timeout"
_CLEAN = "retrying_uow_clean"
_SESSION_INFO = "retrying_uow_session_info"
_ERRORS = "retrying_uow_errors"
_MIN_READ_TIMEOUT = 0.1
_SERVER_STATUS_IN_TRANS = 1  # MySQL protocol: the server has a transaction open


def create_engine(url: str | sqlalchemy.URL, **kwargs: Any) -> Engine:
    """Create an Engine as :func:`sqlalchemy.create_engine` does, lean for units of work.

    Two differences. The pool's reset-on-return is replaced by one that skips the
    ROLLBACK when the unit of work has just committed or rolled back the connection's
    transaction (and the driver confirms none is open), saving a round trip per
    operation; any other connection is rolled back as usual. And with PyMySQL and no
    TLS option of yours, its default TLS context is built once, not on every connect
    (see :func:`adapters.mysql.connect_sharing_tls_context`): reconnecting after a
    failover takes about a millisecond instead of tens. ``pool_pre_ping`` is not
    needed: a stale connection fails the attempt, and the operation is rerun.
    """
    custom_reset = "pool_reset_on_return" in kwargs
    if not custom_reset:
        kwargs["pool_reset_on_return"] = None
    engine = sqlalchemy.create_engine(url, **kwargs)
    if not custom_reset:
        event.listen(engine, "reset", _reset_unless_clean)
    connect_args = kwargs.get("connect_args", {})
    if "creator" not in kwargs and not any(key.startswith("ssl") for key in connect_args):
        event.listen(engine, "do_connect", mysql.connect_sharing_tls_context)
    return engine


_deadline: ContextVar[float | None] = ContextVar("retrying_uow_deadline", default=None)


def bound_connects(deadline: float) -> Token[float | None]:
    """Bound connections opened from now on by ``deadline`` (``time.monotonic()``)."""
    return _deadline.set(deadline)


def unbound_connects(token: Token[float | None]) -> None:
    """Undo :func:`bound_connects` (in the same context)."""
    _deadline.reset(token)


@contextmanager
def bounded(deadline: float) -> Iterator[None]:
    """Bound new connections opened in this block by ``deadline``."""
    token = bound_connects(deadline)
    try:
        yield
    finally:
        unbound_connects(token)


def attach(sessions: sessionmaker[Session], engine: Engine) -> None:
    """Install the listeners on the sessionmaker and the engine's pool (idempotent)."""
    if engine.dialect.driver == "pymysql" and engine not in _bounding_connects:
        # First among do_connect listeners: they may connect themselves (TLS sharing).
        event.listen(engine, "do_connect", _bound_connect, insert=True)
        _bounding_connects.add(engine)
    _listen_once(sessions, "after_begin", _on_attempt_begin)
    _listen_once(sessions, "after_commit", _mark_clean)
    _listen_once(sessions, "after_rollback", _mark_clean)
    _listen_once(engine.pool, "checkin", _on_checkin)
    _listen_once(engine, "handle_error", _remember_error)
    guard.install(engine)


def origin(session: Session) -> mysql.Origin | None:
    """Return who ran an attempt's transaction (server thread and node), if known."""
    value = session.info.get(_ORIGIN)
    return value if isinstance(value, mysql.Origin) else None


def errors_seen(session: Session) -> list[BaseException]:
    """Return the database errors raised by statements of an attempt's session so far."""
    errors: list[BaseException] = session.info.get(_ERRORS, [])
    return errors


_listening: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
_bounding_connects: weakref.WeakSet[Engine] = weakref.WeakSet()


def _bound_connect(
    _dialect: Any, record: Any, _cargs: tuple[Any, ...], cparams: dict[str, Any]
) -> None:
    """Bound the connect and login of a connection opened inside an attempt.

    PyMySQL reads the greeting and the login replies with its ``read_timeout``; a
    server that accepts and then says nothing would otherwise hold the attempt
    forever. The configured value is what the connection returns to at check-in.
    """
    deadline = _deadline.get()
    if deadline is None:
        return
    remaining = max(deadline - time.monotonic(), _MIN_READ_TIMEOUT)
    record.info[_UNBOUNDED_READS] = cparams.get("read_timeout")
    cparams["read_timeout"] = remaining
    cparams["connect_timeout"] = min(cparams.get("connect_timeout") or remaining, remaining)


def _listen_once(target: Any, name: str, listener: Callable[..., None]) -> None:
    # Not event.contains(): for a sessionmaker it answers by the id() of the Session
    # class it made, which a new sessionmaker's class may reuse once the old is gone.
    names = _listening.setdefault(target, set())
    if name not in names:
        event.listen(target, name, listener)
        names.add(name)


def _on_attempt_begin(session: Session, _transaction: Any, connection: Connection) -> None:
    attempt = session.info.get(ATTEMPT)
    if attempt is None:
        return  # a session of the user's own, not an attempt's
    proxied = connection.connection
    dbapi_connection = proxied.dbapi_connection
    # Bound the reads first: even the one-time server facts query must not block forever.
    remaining = max(attempt.deadline - time.monotonic(), _MIN_READ_TIMEOUT)
    proxied.info.setdefault(_UNBOUNDED_READS, mysql.bound_reads(dbapi_connection, remaining))
    facts = mysql.server_facts(connection)
    guard.watch(connection, attempt)
    thread_id = mysql.thread_id(dbapi_connection)
    if facts is not None and thread_id is not None:
        session.info[_ORIGIN] = mysql.Origin(thread_id, facts.node, time.time())
    session.info[_CONNECTION] = proxied
    proxied.info[_SESSION_INFO] = session.info


def _remember_error(context: ExceptionContext) -> None:
    """Note a statement's error on the attempt's session, even if its code catches it."""
    connection = context.connection
    error = context.sqlalchemy_exception
    if connection is None or error is None or connection.invalidated:
        return
    session_info = connection.info.get(_SESSION_INFO)
    if session_info is not None:
        session_info.setdefault(_ERRORS, []).append(error)


def _mark_clean(session: Session) -> None:
    """After the attempt's COMMIT or ROLLBACK succeeded, before the connection goes back."""
    proxied = session.info.pop(_CONNECTION, None)
    if proxied is not None:
        proxied.info[_CLEAN] = True


def _on_checkin(dbapi_connection: Any, record: Any) -> None:
    # The clean mark is for the reset of this check-in only, never a later one.
    record.info.pop(_CLEAN, None)
    record.info.pop(_SESSION_INFO, None)
    guard.unwatch(record.info)
    if _UNBOUNDED_READS in record.info:
        mysql.bound_reads(dbapi_connection, record.info.pop(_UNBOUNDED_READS))


def _in_transaction(dbapi_connection: Any) -> bool:
    """Ask the driver whether a transaction is open; assume so when it cannot tell."""
    status = getattr(dbapi_connection, "server_status", None)  # PyMySQL: from the last reply
    if isinstance(status, int):
        return bool(status & _SERVER_STATUS_IN_TRANS)
    in_transaction = getattr(dbapi_connection, "in_transaction", None)  # sqlite3
    return in_transaction if isinstance(in_transaction, bool) else True


def _reset_unless_clean(dbapi_connection: Any, record: Any, reset_state: PoolResetState) -> None:
    if reset_state.terminate_only:
        return  # the connection is being closed: nothing to reset
    if record.info.pop(_CLEAN, False) and not _in_transaction(dbapi_connection):
        return
    dbapi_connection.rollback()
