"""MySQL/MariaDB in the SQLAlchemy adapter, without a server: listeners, drivers, facts."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pymysql
import pytest
from sqlalchemy import create_engine, event
from sqlalchemy.orm import sessionmaker

from adapters.mysql import SUPPORT, driver
from adapters.mysql._support import _invalidate_on_failover
from adapters.sqlalchemy import SqlAlchemyBackend
from adapters.sqlalchemy._databases import AttemptState, ConnectionState
from tests.unit.conftest import wrapped
from uow import AttemptInfo, Classification, ErrorKind

OPERATIONAL = pymysql.err.OperationalError
PERMANENT = ErrorKind.PERMANENT


def mysql_engine() -> Any:
    return create_engine("mysql+pymysql://app:secret@127.0.0.1:1/app")


def test_failover_errors_are_marked_as_disconnects() -> None:
    """The handle_error listener marks failover errors (and connector's -1) as disconnects."""
    cases = (
        (OPERATIONAL(1290, "x"), True),
        (OPERATIONAL(1792, "x"), True),
        (OPERATIONAL(-1, "MySQL Connection not available"), True),
        (OPERATIONAL(1213, "x"), False),
        (OPERATIONAL(2006, "x"), False),
        (OPERATIONAL(-1, "something else"), False),
    )
    for error, expected in cases:
        context = SimpleNamespace(original_exception=error, is_disconnect=False)
        _invalidate_on_failover(context)  # type: ignore[arg-type]
        assert context.is_disconnect is expected, error.args


def test_install_is_idempotent() -> None:
    """Installing the failover listener twice registers it once."""
    engine = mysql_engine()
    SUPPORT.install(engine)
    SUPPORT.install(engine)
    assert event.contains(engine, "handle_error", _invalidate_on_failover)
    event.remove(engine, "handle_error", _invalidate_on_failover)
    assert not event.contains(engine, "handle_error", _invalidate_on_failover)


def test_mysql_backend_uses_the_mysql_table() -> None:
    """A SQLAlchemy backend on a MySQL engine classifies by errno and installs the listener."""
    engine = mysql_engine()
    backend = SqlAlchemyBackend(engine)
    assert backend.classify(wrapped(OPERATIONAL(1213, "Deadlock"))).kind is ErrorKind.DEADLOCK
    assert event.contains(engine, "handle_error", _invalidate_on_failover)
    assert backend.database is engine


def test_other_database_backend_uses_the_generic_rules() -> None:
    """On SQLite, a MySQL errno means nothing: only SQLAlchemy's disconnect verdict counts."""
    backend = SqlAlchemyBackend(create_engine("sqlite://"))
    assert backend.classify(wrapped(OPERATIONAL(1213, "Deadlock"))).kind is PERMANENT
    invalidated = wrapped(OPERATIONAL(1, "x"), invalidated=True)
    assert backend.classify(invalidated).kind is ErrorKind.DISCONNECT


def test_custom_classifier_is_used() -> None:
    """A classifier given to the backend replaces the built-in one."""
    verdict = Classification(ErrorKind.FAILOVER, 42)
    backend = SqlAlchemyBackend(mysql_engine(), classifier=lambda _error: verdict)
    assert backend.classify(ValueError()) is verdict


def test_sessionmaker_must_be_bound() -> None:
    """An unbound sessionmaker is a TypeError saying what to do."""
    with pytest.raises(TypeError, match="bound to an Engine"):
        SqlAlchemyBackend(sessionmaker())


def test_bind_must_be_engine_or_sessionmaker() -> None:
    """Anything else as bind is a TypeError naming its type."""
    with pytest.raises(TypeError, match="str"):
        SqlAlchemyBackend("mysql://app@db/app")  # type: ignore[arg-type]


# --- driver connection helpers -------------------------------------------------------------


class FakeSocket:
    def __init__(self) -> None:
        self.timeouts: list[float | None] = []

    def settimeout(self, seconds: float | None) -> None:
        self.timeouts.append(seconds)


def test_bound_reads_sets_pymysql_read_timeout_and_undoes_it() -> None:
    """On a PyMySQL connection the read timeout is replaced; the undo puts the old one back."""
    sock = FakeSocket()
    connection = SimpleNamespace(_read_timeout=None, _current_timeout=None, _sock=sock)
    undo = driver("pymysql").bound_reads(connection, 2.5)
    assert connection._read_timeout == 2.5
    assert undo is not None
    undo()
    assert connection._read_timeout is None
    assert sock.timeouts == []  # current PyMySQL applies _read_timeout per read


def test_bound_reads_on_older_pymysql_sets_the_socket_timeout() -> None:
    """Older PyMySQL reads the bound only at connect, so the socket's timeout is set too."""
    sock = FakeSocket()
    connection = SimpleNamespace(_read_timeout=30.0, _sock=sock)
    undo = driver("pymysql").bound_reads(connection, 1.5)
    assert sock.timeouts == [1.5]
    assert undo is not None
    undo()
    assert (connection._read_timeout, sock.timeouts) == (30.0, [1.5, 30.0])


def test_bound_reads_of_mysql_connector_are_whole_seconds() -> None:
    """mysql-connector's read_timeout property takes whole seconds, rounded up."""
    connection = SimpleNamespace(read_timeout=None)
    undo = driver("mysqlconnector").bound_reads(connection, 1.2)
    assert connection.read_timeout == 2
    assert undo is not None
    undo()
    assert connection.read_timeout is None


@pytest.mark.parametrize("name", ["pymysql", "mysqldb", "mariadbconnector", "aiomysql", "unknown"])
def test_bound_reads_leaves_other_connections_alone(name: str) -> None:
    """A connection without a run-time read bound is left unchanged; there is nothing to undo."""
    connection = SimpleNamespace()
    assert driver(name).bound_reads(connection, 1.0) is None
    assert vars(connection) == {}


def test_bound_connect_keeps_the_tighter_bound() -> None:
    """A new connection's connect and read timeouts are the budget's, unless the user's is lower."""
    params: dict[str, Any] = {"connect_timeout": 1}
    driver("pymysql").bound_connect(params, 4.5)
    assert params == {"connect_timeout": 1, "read_timeout": 4.5}
    whole: dict[str, Any] = {}
    driver("mysqldb").bound_connect(whole, 0.2)
    assert whole == {"connect_timeout": 1, "read_timeout": 1}


class FakeCursor:
    def __init__(self, row: tuple[Any, ...] | Exception) -> None:
        self.row = row
        self.closed = False

    def execute(self, _sql: str) -> None:
        if isinstance(self.row, Exception):
            raise self.row

    def fetchone(self) -> tuple[Any, ...]:
        assert not isinstance(self.row, Exception)
        return self.row

    def close(self) -> None:
        self.closed = True


def attempt_on(cursor: FakeCursor) -> AttemptState:
    state = AttemptState(AttemptInfo("op", 1, 0.0), SUPPORT)
    state.start(ConnectionState(), SimpleNamespace(cursor=lambda: cursor))
    return state


def test_connection_facts_are_read_once_at_begin() -> None:
    """At BEGIN the server's wait_timeout, node and connection id are read, once per connection."""
    cursor = FakeCursor((28800, "db1", 3306, 42))
    state = attempt_on(cursor)
    SUPPORT.begin(None, state)  # type: ignore[arg-type]
    facts = state.connection
    assert facts is not None
    assert (facts.wait_timeout, facts.node, facts.server_id, facts.facts_read) == (
        28800.0,
        "db1:3306",
        42,
        True,
    )
    assert cursor.closed
    cursor.row = OPERATIONAL(2006, "gone")  # a second read would fail: it is not made
    SUPPORT.begin(None, state)  # type: ignore[arg-type]
    assert facts.server_id == 42


def test_connection_facts_that_cannot_be_read_are_left_unknown() -> None:
    """A stale connection failing the facts query is left for the attempt's first statement."""
    state = attempt_on(FakeCursor(OPERATIONAL(2006, "MySQL server has gone away")))
    SUPPORT.begin(None, state)  # type: ignore[arg-type]
    assert state.connection is not None
    assert (state.connection.server_id, state.connection.facts_read) == (None, False)
