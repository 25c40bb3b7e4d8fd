"""What the unit of work does to the connections its attempts borrow from the user's pool.

Installed once per engine, and only at the dialect level (``do_execute``,
``handle_error``, ``do_connect``, and wrappers of ``do_commit``/``do_rollback``), so
the user's own sessions on the same engine pay a dictionary lookup per statement and
nothing else. For an attempt's connection:

- each statement is counted (injected faults strike there), refused if it would end
  the transaction (``COMMIT``, ``ROLLBACK``, MySQL DDL, ...), noted if it writes, and
  timed for the transaction guard;
- its COMMIT is refused unless the runner makes it;
- database errors raised on it are remembered, so that an attempt whose code caught
  a transient error is never committed; a lost connection at the attempt's deadline is
  marked as the read bound firing, and the likely cause of a lost connection is named;
- new connections opened inside an attempt are bounded by its deadline.

Any other connection's statement passes untouched, unless strict mode is on
(`adapters.sqlalchemy._strict`): then it is refused, naming its call site.
"""

from __future__ import annotations

import asyncio
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.util.concurrency import await_only, in_greenlet

from adapters.sqlalchemy import _guard, _strict
from adapters.sqlalchemy._databases import attempt_of_connection, connection_state
from adapters.sqlalchemy._statements import Effect, first_keyword
from adapters.sqlalchemy._watchdog import WATCHDOG
from uow import ErrorKind, TransactionControlError, UnitOfWorkError

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Connection, Dialect, Engine, ExceptionContext, ExecutionContext

    from adapters.sqlalchemy._databases import AttemptState, DatabaseSupport

KIND_ATTRIBUTE = "__retrying_uow_kind__"
"""Attribute of an error holding a kind the adapter already knows (its read bound fired)."""
CAUSE_ATTRIBUTE = "__retrying_uow_cause__"
"""Attribute of an error holding the likely cause of a lost connection."""
MIN_READ_TIMEOUT = 0.1
"""Seconds: the least time a read is given, even when the budget is all but spent."""
_DEADLINE_SLACK = 0.05
_INSTALLED = "_retrying_uow_installed"

connect_deadline: ContextVar[float | None] = ContextVar("retrying_uow_deadline", default=None)
"""The deadline of the attempt running in this context: it bounds new connections."""


def pause(seconds: float) -> None:
    """Wait between two tries of the library's own round trips (a commit marker's lookup, ...).

    The async adapter runs this code in an AsyncSession's greenlet, on the event loop's
    thread, where ``time.sleep`` would stop every task of the loop: there the wait is awaited
    through SQLAlchemy's bridge instead.
    """
    try:
        on_the_loop = in_greenlet()
    except ImportError:  # no greenlet installed: no AsyncEngine can be running this
        on_the_loop = False
    if on_the_loop:
        await_only(asyncio.sleep(seconds))
    else:
        time.sleep(seconds)


def install(engine: Engine, support: DatabaseSupport) -> None:
    """Install the attempt listeners on ``engine``'s dialect (once per engine)."""
    _strict.watch(engine)
    dialect = engine.dialect
    if getattr(dialect, _INSTALLED, False):
        return
    _listen_first(engine, "do_connect", _bounded_connect(support))
    event.listen(engine, "do_execute", _on_execute)
    event.listen(engine, "do_execute_no_params", _on_execute_no_params)
    event.listen(engine, "do_executemany", _on_executemany)
    event.listen(engine, "handle_error", _on_error)
    dialect.do_commit = _owned_commit(dialect, dialect.do_commit)  # type: ignore[method-assign, assignment]
    dialect.do_rollback = _released_rollback(dialect.do_rollback)  # type: ignore[method-assign, assignment]
    setattr(dialect, _INSTALLED, True)
    support.install(engine)


def _listen_first(engine: Engine, name: str, listener: Callable[..., Any]) -> None:
    """Listen before the listeners already there (``insert=True`` is not honoured here).

    The bound of a new connection must be in its parameters before a ``do_connect``
    listener that connects itself (PyMySQL's shared TLS context, ``Endpoints``) runs.
    """
    earlier = list(getattr(engine.dialect.dispatch, name))
    for found in earlier:
        event.remove(engine, name, found)
    event.listen(engine, name, listener)
    for found in earlier:
        event.listen(engine, name, found)


def begin_attempt(state: AttemptState, connection: Connection) -> None:
    """At the BEGIN of an attempt's transaction: bind it to the connection, bound its reads."""
    proxied = connection.connection
    current = connection_state(proxied.info)
    if state.connection is not None and state.connection is not current:
        msg = (
            f"operation {state.attempt.operation!r} used a second database connection in one "
            "unit of work (a session with several binds): a commit across two databases can "
            "half succeed; split the operation, one database each"
        )
        raise UnitOfWorkError(msg)
    state.start(current, proxied.dbapi_connection)
    remaining = max(state.attempt.deadline - time.monotonic(), MIN_READ_TIMEOUT)
    state.undo_read_bound = state.support.bound_reads(
        connection.dialect, proxied.dbapi_connection, remaining
    )
    state.fd = state.support.socket_of(connection.dialect, proxied.dbapi_connection)
    try:
        state.support.begin(connection, state)
        _guard.arm(state)
    except BaseException:
        # Only a cancellation gets here (the support keeps its own errors). Its round trip
        # went to the driver directly, past SQLAlchemy's handling of an interrupted one:
        # the connection may be in the middle of an exchange and must never be reused.
        connection.invalidate()
        raise


def refusal(state: AttemptState, call: str, remedy: str) -> TransactionControlError:
    """Return the error for ``call`` made by the code of ``state``'s operation."""
    attempt = state.attempt
    return TransactionControlError(
        f"{call} inside operation {attempt.operation!r} (attempt {attempt.number}): the "
        f"unit of work owns the transaction, and this would commit or drop part of the "
        f"operation on its own, so that a rerun repeats it or the rest commits without "
        f"it. Instead: {remedy}"
    )


def _bounded_connect(support: DatabaseSupport) -> Callable[..., None]:
    def bound(dialect: Dialect, _record: Any, _cargs: Any, params: dict[str, Any]) -> None:
        deadline = connect_deadline.get()
        if deadline is not None:
            remaining = max(deadline - time.monotonic(), MIN_READ_TIMEOUT)
            support.bound_connect(dialect, params, remaining)

    return bound


def _attempt(context: ExecutionContext) -> AttemptState | None:
    try:
        proxied = context.root_connection.connection
    except Exception:  # noqa: BLE001 -- no usable connection (being set up): not an attempt's
        return None
    return _holder(proxied)


def _before(state: AttemptState, statement: str, context: ExecutionContext) -> None:
    state.statements += 1
    if state.attempt.faults is not None:
        fault = state.attempt.fault_at(state.statements)
        if fault is not None:
            raise state.support.fault_error(context.dialect, fault)
    keyword = first_keyword(statement)
    effect, name = state.support.effect(keyword, statement)
    if effect is Effect.WRITE:
        state.wrote = True
    elif effect is Effect.ENDS and not state.owner:
        remedy = (
            "let the runner commit when the operation returns (savepoints: "
            "`uow.begin_nested()`); run schema changes outside operations"
        )
        raise refusal(state, f"the statement {name}", remedy)
    now = time.monotonic()
    if now - state.last_activity > state.idle_limit or now - state.began > state.open_limit:
        _guard.check(state, now)  # (`_guard.due`, inlined: this runs for every statement)
    if state.undo_read_bound is not None:
        # The bound set at BEGIN would let a read that starts late outlast the deadline.
        remaining = max(state.attempt.deadline - now, MIN_READ_TIMEOUT)
        state.support.bound_reads(context.dialect, state.dbapi_connection, remaining)


def _watched(state: AttemptState) -> int | None:
    """Arm the watchdog for a statement of a driver that cannot bound its own reads."""
    return None if state.fd is None else WATCHDOG.arm(state.fd, state.attempt.deadline)


def _on_execute(cursor: Any, statement: str, parameters: Any, context: ExecutionContext) -> bool:
    state = _attempt(context)
    if state is None:
        if _strict.active:
            _strict.check(context, statement)
        return False  # not an attempt's connection: SQLAlchemy executes it as usual
    _before(state, statement, context)
    token = _watched(state)
    try:
        context.dialect.do_execute(cursor, statement, parameters, context)
    finally:
        if token is not None:
            WATCHDOG.disarm(token)
    state.last_activity = time.monotonic()
    return True


def _on_execute_no_params(cursor: Any, statement: str, context: ExecutionContext) -> bool:
    state = _attempt(context)
    if state is None:
        if _strict.active:
            _strict.check(context, statement)
        return False
    _before(state, statement, context)
    token = _watched(state)
    try:
        context.dialect.do_execute_no_params(cursor, statement, context)
    finally:
        if token is not None:
            WATCHDOG.disarm(token)
    state.last_activity = time.monotonic()
    return True


def _on_executemany(
    cursor: Any, statement: str, parameters: Any, context: ExecutionContext
) -> bool:
    state = _attempt(context)
    if state is None:
        if _strict.active:
            _strict.check(context, statement)
        return False
    _before(state, statement, context)
    token = _watched(state)
    try:
        context.dialect.do_executemany(cursor, statement, parameters, context)
    finally:
        if token is not None:
            WATCHDOG.disarm(token)
    state.last_activity = time.monotonic()
    return True


def _holder(proxied: Any) -> AttemptState | None:
    """Return the attempt holding a pooled connection (``None`` for any other connection)."""
    try:
        info = proxied.info
    except (AttributeError, NotImplementedError):  # the dialect's first-connect setup
        return None
    return attempt_of_connection(info)


def _owned_commit(dialect: Dialect, original: Callable[[Any], None]) -> Callable[[Any], None]:
    """Wrap ``dialect.do_commit``: only the runner commits an attempt's transaction."""

    def do_commit(dbapi_connection: Any) -> None:
        state = _holder(dbapi_connection)
        if state is None:
            original(dbapi_connection)
            return
        if not state.owner:
            remedy = "let the runner commit when the operation returns"
            raise refusal(state, "Connection.commit()", remedy)
        now = time.monotonic()
        if _guard.due(state, now):
            _guard.check(state, now)
        fault = state.attempt.fault_at("commit") if state.attempt.faults is not None else None
        if fault is not None:
            if fault.committed:
                original(dbapi_connection)  # applied; only the reply is lost
            raise state.support.fault_error(dialect, fault)
        if state.undo_read_bound is not None:
            remaining = max(state.attempt.deadline - now, MIN_READ_TIMEOUT)
            state.support.bound_reads(dialect, state.dbapi_connection, remaining)
        token = _watched(state)
        try:
            original(dbapi_connection)
        finally:
            if token is not None:
                WATCHDOG.disarm(token)
        state.release()

    return do_commit


def _released_rollback(original: Callable[[Any], None]) -> Callable[[Any], None]:
    """Wrap ``dialect.do_rollback``: an attempt's connection is released once rolled back."""

    def do_rollback(dbapi_connection: Any) -> None:
        original(dbapi_connection)
        state = _holder(dbapi_connection)
        if state is not None:
            state.release()

    return do_rollback


def _on_error(context: ExceptionContext) -> None:
    """Remember an attempt's database error; name what it means when the adapter knows."""
    connection = context.connection
    error = context.sqlalchemy_exception
    if connection is None or error is None:
        return
    try:
        state = _holder(connection.connection)
    except Exception:  # noqa: BLE001 -- the connection is already gone: nothing to note
        return
    if state is None:
        return
    state.errors.append(error)
    _guard.check(state, time.monotonic())  # mysql-connector fails in its ping, before a statement
    lost = state.support.classify(error).kind is ErrorKind.DISCONNECT
    if not (context.is_disconnect or lost):
        return
    if time.monotonic() >= state.attempt.deadline - _DEADLINE_SLACK:
        setattr(error, KIND_ATTRIBUTE, ErrorKind.INTERRUPTED)
        setattr(error, CAUSE_ATTRIBUTE, _guard.READ_TIMEOUT_CAUSE)
        return
    cause = state.support.cause(context.original_exception, state)
    if cause is not None:
        setattr(error, CAUSE_ATTRIBUTE, cause)
