"""The long-transaction guard: warn before a held transaction turns into "gone away".

An attempt that keeps its transaction open for long, or lets it sit idle past the
server's ``wait_timeout``, is the seed incident in the making. The guard watches the
statements of attempts (not the user's own sessions) and logs one WARNING per attempt
and condition. When a lost connection follows, it names the likely cause on the
error, so the retry log line and the exception's notes say why it happened.

``wait_timeout`` comes from :func:`adapters.mysql.server_facts`, read once per
connection; later operations pay nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import event

from adapters import mysql

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine, ExceptionContext

    from uow import AttemptInfo

logger = logging.getLogger("retrying_uow")

_WATCH = "retrying_uow_watch"
_CHECKED_IN = "retrying_uow_checked_in"


@dataclass
class Watch:
    """What the guard knows of one attempt's transaction on one connection."""

    attempt: AttemptInfo
    began: float
    last_activity: float
    warned: set[str] = field(default_factory=set)


def install(engine: Engine) -> None:
    """Watch the engine's attempt transactions (idempotent)."""
    for name, listener in (
        ("before_cursor_execute", _before_statement),
        ("after_cursor_execute", _after_statement),
        ("commit", _before_commit),
        ("handle_error", _name_cause),
    ):
        if not event.contains(engine, name, listener):
            event.listen(engine, name, listener)


def watch(connection: Connection, attempt: AttemptInfo) -> None:
    """Start watching an attempt's transaction on a connection (at BEGIN)."""
    now = time.monotonic()
    connection.info[_WATCH] = Watch(attempt, began=now, last_activity=now)


def unwatch(record_info: dict[Any, Any]) -> None:
    """Stop watching (at check-in); remember when the connection went idle in the pool."""
    record_info.pop(_WATCH, None)
    record_info[_CHECKED_IN] = time.monotonic()


def _wait_timeout(connection: Connection) -> float | None:
    facts = mysql.known_server_facts(connection)
    return None if facts is None else facts.wait_timeout


def _check(connection: Connection, watched: Watch, now: float) -> None:
    policy = watched.attempt.policy
    name = watched.attempt.operation
    idle = now - watched.last_activity
    wait_timeout = _wait_timeout(connection)
    if (
        policy.warn_idle_transaction
        and wait_timeout is not None
        and idle > wait_timeout
        and "idle" not in watched.warned
    ):
        watched.warned.add("idle")
        logger.warning(
            "transaction of %s sat idle %.1f s, past the server's wait_timeout of %.0f s: "
            "expect 'MySQL server has gone away'; do slow work outside the operation",
            name,
            idle,
            wait_timeout,
            extra={"uow_operation": name, "uow_idle": round(idle, 3)},
        )
    open_for = now - watched.began
    limit = policy.warn_transaction_after
    if limit is not None and open_for > limit and "long" not in watched.warned:
        watched.warned.add("long")
        logger.warning(
            "transaction of %s has been open %.1f s (warn_transaction_after=%.1f s); "
            "long transactions hold locks and connections: split the operation",
            name,
            open_for,
            limit,
            extra={"uow_operation": name, "uow_open_for": round(open_for, 3)},
        )


def _before_statement(connection: Connection, *_: Any) -> None:
    watched = connection.info.get(_WATCH)
    if watched is not None:
        _check(connection, watched, time.monotonic())


def _after_statement(connection: Connection, *_: Any) -> None:
    watched = connection.info.get(_WATCH)
    if watched is not None:
        watched.last_activity = time.monotonic()


def _before_commit(connection: Connection) -> None:
    _before_statement(connection)


def _name_cause(context: ExceptionContext) -> None:
    """Attach the likely cause of a lost connection to the error SQLAlchemy raises."""
    error = context.sqlalchemy_exception
    if error is None or mysql.errno_of(context.original_exception) not in {2006, 2013}:
        return
    cause = _cause(context)
    if cause is not None:
        setattr(error, mysql.CAUSE_ATTRIBUTE, cause)


def _cause(context: ExceptionContext) -> str | None:
    original = context.original_exception
    if "timed out" in str(original):
        return "client read timeout: the operation's time budget ran out while waiting"
    connection = context.connection
    if connection is None:
        return None
    watched = connection.info.get(_WATCH)
    wait_timeout = _wait_timeout(connection)
    if watched is not None and wait_timeout is not None:
        idle = time.monotonic() - watched.last_activity
        if idle > wait_timeout:
            return (
                f"idle {idle:.1f} s in a transaction; server wait_timeout is {wait_timeout:.0f} s"
            )
        checked_in = connection.info.get(_CHECKED_IN)
        pooled = None if checked_in is None else watched.began - checked_in
        if pooled is not None and watched.last_activity == watched.began and pooled > wait_timeout:
            return (
                f"idle {pooled:.1f} s in the pool; server wait_timeout is {wait_timeout:.0f} s "
                "(a pool_recycle below wait_timeout avoids this first failed attempt)"
            )
    return "the server closed the connection (KILL, crash or restart)"
