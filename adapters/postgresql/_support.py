"""PostgreSQL in the SQLAlchemy adapter: the ``DatabaseSupport`` for psycopg 3 and asyncpg."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.exc import DBAPIError

from adapters.postgresql import _drivers, _outcome
from adapters.postgresql._errors import classify, sqlstate_of
from adapters.sqlalchemy._statements import Effect, generic_effect
from uow import Classification, ErrorKind

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Dialect, Engine, ExceptionContext
    from sqlalchemy.orm import Session

    from adapters.sqlalchemy._databases import AttemptState
    from uow.testing import Fault

FAULTS = {
    ErrorKind.DISCONNECT: ("57P01", "terminating connection due to administrator command"),
    ErrorKind.UNAVAILABLE: ("57P03", "the database system is starting up"),
    ErrorKind.DEADLOCK: ("40P01", "deadlock detected"),
    ErrorKind.LOCK_WAIT: ("55P03", "canceling statement due to lock timeout"),
    ErrorKind.FAILOVER: ("25006", "cannot execute INSERT in a read-only transaction"),
    ErrorKind.INTERRUPTED: ("57014", "canceling statement due to statement timeout"),
}
"""The SQLSTATE and server message an injected fault of each kind raises (its errno is ignored:
PostgreSQL errors have SQLSTATEs, not numbers)."""

_ABORTED_NOTE = (
    "retrying-uow: the operation caught an earlier database error and went on, but "
    "PostgreSQL aborts the whole transaction at any error, so its COMMIT would have "
    "written nothing (and reported success). Let the error propagate, or run the "
    "statement that may fail in a savepoint: `with uow.begin_nested(): ...`"
)
_CAUSES = {
    "25P03": "the server's idle_in_transaction_session_timeout ended the session",
    "57P05": (
        "the connection sat idle in the pool past the server's idle_session_timeout "
        "(pool_pre_ping, or a pool_recycle below it, avoids this first failed attempt)"
    ),
    "57P01": "the server ended the session (pg_terminate_backend, or a fast shutdown)",
    "57P02": "the server reset every session after one of its processes crashed",
}
_IDLE_WORTH_NAMING = 1.0  # seconds
_DROPPED = frozenset({ErrorKind.FAILOVER, ErrorKind.DISCONNECT})


class PostgreSQLSupport:
    """What the SQLAlchemy adapter needs to know about PostgreSQL (psycopg 3, asyncpg)."""

    name = "PostgreSQL"

    def classify(self, error: BaseException) -> Classification:
        """See `adapters.postgresql.classify`."""
        return classify(error)

    def install(self, engine: Engine) -> None:
        """Make SQLAlchemy drop connections on a standby (25006), or lost without its noticing."""
        if not event.contains(engine, "handle_error", _invalidate):
            event.listen(engine, "handle_error", _invalidate)

    def bound_connect(self, dialect: Dialect, params: dict[str, Any], seconds: float) -> None:
        """Bound the connect and login (see `adapters.postgresql._drivers`)."""
        _drivers.bound_connect(dialect.driver, params, seconds)

    def bound_reads(self, dialect: Dialect, dbapi_connection: Any, seconds: float) -> Any:  # noqa: ARG002
        """Make the socket give up on a silent peer within ``seconds``; nothing to undo."""
        _drivers.bound_socket(dbapi_connection, seconds)

    def socket_of(self, dialect: Dialect, dbapi_connection: Any) -> int | None:
        """Sync psycopg: its socket, for the watchdog (TCP timers cannot see a frozen server).

        The async drivers are bounded by the async runner's ``asyncio.timeout``.
        """
        if dialect.is_async:
            return None
        return _drivers.fileno_of(dbapi_connection)

    def begin(self, connection: Connection, state: AttemptState) -> None:  # noqa: ARG002 -- protocol
        """Read the connection's backend pid and server instance once (one round trip).

        They identify the original transaction's backend after a lost COMMIT. A query
        that fails here leaves the transaction aborted on the server, so its error is
        recorded: the attempt cannot commit, and it is judged by that error.
        """
        facts = state.connection
        if facts is None or facts.facts_read:
            return
        try:
            cursor = state.dbapi_connection.cursor()
            try:
                cursor.execute(_outcome.FACTS)
                row = cursor.fetchone()
            finally:
                cursor.close()
        except Exception as error:  # noqa: BLE001 -- recorded, see the docstring
            state.errors.append(error)
            return
        if row is not None:
            facts.server_id = int(row[0])
            facts.node = _outcome.instance(row[1], row[2], row[3])
            facts.facts_read = True

    def effect(self, keyword: str, statement: str) -> tuple[Effect, str]:
        """Apply the generic rules: PostgreSQL commits nothing implicitly (DDL is transactional)."""
        return generic_effect(keyword, statement)

    def cause(self, error: BaseException, state: AttemptState | None) -> str | None:
        """Name why the session ended, from its SQLSTATE, or from how long it sat idle."""
        sqlstate = sqlstate_of(error)
        idle = None if state is None else time.monotonic() - state.last_activity
        if sqlstate in _CAUSES:
            named = _CAUSES[sqlstate]
            if sqlstate == "25P03" and idle is not None:
                return f"idle {idle:.1f} s in a transaction: {named}"
            return named
        if sqlstate is not None and not sqlstate.startswith("08"):
            return None  # class 08: the driver's own "connection does not exist" (asyncpg)
        if idle is not None and idle >= _IDLE_WORTH_NAMING:
            return (
                f"the connection was lost after {idle:.1f} s idle in a transaction "
                "(idle_in_transaction_session_timeout, a terminated backend, a restart or "
                "the network; the driver does not say which)"
            )
        return "the connection was lost (a crash, an immediate shutdown, or the network)"

    def fault_error(self, dialect: Dialect, fault: Fault) -> Exception:
        """Return the driver's own error for a fault, with the server's SQLSTATE and message."""
        found = FAULTS.get(fault.kind)
        if found is None:
            msg = f"{fault} cannot be simulated on PostgreSQL"
            raise NotImplementedError(msg)
        return _drivers.driver_exception(dialect, *found)

    def in_transaction(self, dbapi_connection: Any) -> bool:
        """Whatever the driver can tell (psycopg and asyncpg both can)."""
        return _drivers.in_transaction(dbapi_connection)

    def before_commit(self, session: Session, state: AttemptState) -> None:
        """Refuse to COMMIT an aborted transaction; read its id when lost COMMITs are settled.

        PostgreSQL answers the COMMIT of a transaction aborted by an error with a
        ROLLBACK, and the driver returns normally: the operation would report success
        with nothing written. psycopg tells the state without a round trip; for asyncpg,
        which keeps it private, one statement probes it when errors were seen.
        """
        aborted = _drivers.aborted(state.dbapi_connection)
        if aborted or (aborted is None and state.errors):
            try:
                session.connection().exec_driver_sql("SELECT 1")
            except DBAPIError as error:
                error.add_note(_ABORTED_NOTE)
                raise
        bind: Any = session.bind or session.get_bind()
        if _outcome.settling(bind.dialect):
            _outcome.read_transaction_id(session, state)

    def outcome(self, engine: Engine, state: AttemptState, seconds: float) -> bool | None:
        """See `adapters.postgresql._outcome`."""
        return _outcome.outcome(engine, state, seconds)

    def settle(self, connection: Connection, state: AttemptState, seconds: float) -> None:
        """See `adapters.postgresql._outcome.settle`."""
        _outcome.settle(connection, state, seconds)

    def lean(self, engine: Engine, connect_args: dict[str, Any]) -> None:
        """Nothing to add: the drivers' reset ROLLBACK is already skipped when idle."""


def _invalidate(context: ExceptionContext) -> None:
    """Make SQLAlchemy drop the connections of the errors it does not see as disconnects.

    A hot standby, or a primary turned read-only (25006), answers every query except
    writes, so neither the pool nor ``pool_pre_ping`` would ever drop its connections;
    and psycopg's "connection socket closed" leaves a connection SQLAlchemy still
    thinks usable. Marked as disconnects, the connection is invalidated, and so are
    the pool's older ones.
    """
    if context.is_pre_ping or context.is_disconnect:
        return
    if classify(context.original_exception).kind in _DROPPED:
        context.is_disconnect = True


SUPPORT = PostgreSQLSupport()
"""The one instance, found by the SQLAlchemy adapter for the ``postgresql`` dialect."""
