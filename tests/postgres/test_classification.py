"""What each PostgreSQL error means, by SQLSTATE, for psycopg and asyncpg alike."""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import errors
from sqlalchemy import event
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from adapters.postgresql import FAULTS, SQLSTATE_KINDS, SUPPORT, classify, sqlstate_of
from uow import ErrorKind
from uow._kinds import commit_outcome_unknown
from uow.testing import Fault

if TYPE_CHECKING:
    from servers.postgres import PostgresServer
    from tests.postgres.conftest import Database

pytestmark = pytest.mark.postgres

BRIEF = {
    "40001": ErrorKind.DEADLOCK,
    "40P01": ErrorKind.DEADLOCK,
    "55P03": ErrorKind.LOCK_WAIT,
    "57P01": ErrorKind.DISCONNECT,
    "57P02": ErrorKind.DISCONNECT,
    "57P03": ErrorKind.UNAVAILABLE,
    "08000": ErrorKind.DISCONNECT,
    "08003": ErrorKind.DISCONNECT,
    "08006": ErrorKind.DISCONNECT,
    "08001": ErrorKind.UNAVAILABLE,
    "08004": ErrorKind.UNAVAILABLE,
    "08P01": ErrorKind.DISCONNECT,
    "25006": ErrorKind.FAILOVER,
    "53300": ErrorKind.UNAVAILABLE,
    "25P03": ErrorKind.DISCONNECT,
    "57P05": ErrorKind.DISCONNECT,
    "57014": ErrorKind.INTERRUPTED,
    "28P01": ErrorKind.PERMANENT,
    "3D000": ErrorKind.PERMANENT,
    "23505": ErrorKind.PERMANENT,
    "25P02": ErrorKind.PERMANENT,
    "42601": ErrorKind.PERMANENT,
    "XX000": ErrorKind.PERMANENT,
}


def psycopg_error(sqlstate: str) -> DBAPIError:
    """A psycopg server error as SQLAlchemy raises it."""
    original = errors.lookup(sqlstate)(f"server error {sqlstate}")
    error = DBAPIError.instance("SELECT 1", None, original, psycopg.Error)
    assert isinstance(error, DBAPIError)
    return error


def asyncpg_error(sqlstate: str) -> DBAPIError:
    """A server error as SQLAlchemy's asyncpg adaptation raises it: a plain DBAPIError."""
    original: Any = AsyncAdapt_asyncpg_dbapi.Error(f"server error {sqlstate}")  # type: ignore[no-untyped-call]  # SQLAlchemy leaves it unannotated
    original.pgcode = original.sqlstate = sqlstate
    error = DBAPIError.instance("SELECT 1", None, original, AsyncAdapt_asyncpg_dbapi.Error)
    assert isinstance(error, DBAPIError)
    return error


@pytest.mark.parametrize("make", [psycopg_error, asyncpg_error], ids=["psycopg", "asyncpg"])
@pytest.mark.parametrize(("sqlstate", "kind"), sorted(BRIEF.items()))
def test_sqlstate_decides(make: Any, sqlstate: str, kind: ErrorKind) -> None:
    """The SQLSTATE decides, whatever class the driver (and SQLAlchemy) gave the error."""
    error = make(sqlstate)
    assert sqlstate_of(error) == sqlstate
    assert classify(error).kind is kind
    assert SUPPORT.classify(error).kind is kind


def test_the_table_lists_what_arrives_with_a_sqlstate() -> None:
    """Every SQLSTATE of the table is there, with the kind above."""
    for sqlstate, kind in SQLSTATE_KINDS.items():
        assert BRIEF.get(sqlstate, kind) is kind, sqlstate


@pytest.mark.parametrize("sqlstate", ["40003", "08007", "57P01", "25P03"])
def test_these_at_commit_leave_the_outcome_unknown(sqlstate: str) -> None:
    """40003 (and a lost session) raised by COMMIT: the runner must settle, not guess."""
    assert commit_outcome_unknown(classify(psycopg_error(sqlstate)).kind)
    assert commit_outcome_unknown(classify(asyncpg_error(sqlstate)).kind)


@pytest.mark.parametrize("sqlstate", ["40001", "40P01", "55P03"])
def test_the_servers_answers_at_commit_are_not_unknown(sqlstate: str) -> None:
    """A serialization failure raised by COMMIT is a definite "not committed"."""
    assert not commit_outcome_unknown(classify(psycopg_error(sqlstate)).kind)


@pytest.mark.parametrize(
    "error", [ConnectionRefusedError(111, "refused"), TimeoutError(), KeyError("57P01")]
)
def test_errors_that_are_not_the_drivers_are_permanent(error: Exception) -> None:
    """An OSError or TimeoutError of the operation's own code is no lost connection."""
    with pytest.raises(type(error)) as raised:  # a traceback, as the runner sees it
        raise error
    assert classify(raised.value).kind is ErrorKind.PERMANENT


def test_lost_connection_without_a_sqlstate_is_a_disconnect() -> None:
    """psycopg's "server closed the connection unexpectedly" (sqlstate None), invalidated."""
    original = psycopg.OperationalError("consuming input failed: server closed the connection")
    error = DBAPIError.instance(
        "COMMIT", None, original, psycopg.Error, connection_invalidated=True
    )
    assert sqlstate_of(error) is None
    assert classify(error).kind is ErrorKind.DISCONNECT
    assert commit_outcome_unknown(classify(error).kind)
    # Not invalidated (psycopg's "connection socket closed" after a reset): still lost.
    socket_closed = psycopg.OperationalError("connection socket closed")
    error = DBAPIError.instance("SELECT 1", None, socket_closed, psycopg.Error)
    assert classify(error).kind is ErrorKind.DISCONNECT
    # A client-side error that is no OperationalError stays permanent.
    misuse = psycopg.ProgrammingError("the query has 1 placeholder but 2 parameters were passed")
    assert (
        classify(DBAPIError.instance("", None, misuse, psycopg.Error)).kind is ErrorKind.PERMANENT
    )


def _connect_error(url: str, **kwargs: Any) -> BaseException:
    engine = sa.create_engine(url, **kwargs)
    try:
        with engine.connect():
            pass
    except BaseException as error:
        return error
    finally:
        engine.dispose()
    raise AssertionError("connected")


def _async_connect_error(url: str) -> BaseException:
    async def connect() -> BaseException:
        engine = create_async_engine(url)
        try:
            async with engine.connect():
                pass
        except BaseException as error:
            return error
        finally:
            await engine.dispose()
        raise AssertionError("connected")

    return asyncio.run(connect())


def test_connect_errors_with_psycopg(private_db: Database) -> None:
    """psycopg loses the SQLSTATE at connect: refused is transient, bad login permanent."""
    url = private_db.url()
    wrong_password = _connect_error(url.replace(private_db.server.password, "wrong"))
    unknown_database = _connect_error(url.rsplit("/", 1)[0] + "/nowhere")
    assert sqlstate_of(wrong_password) is None
    assert classify(wrong_password).kind is ErrorKind.PERMANENT  # 28P01
    assert classify(unknown_database).kind is ErrorKind.PERMANENT  # 3D000
    private_db.server.stop()
    refused = _connect_error(url)
    assert classify(refused).kind is ErrorKind.UNAVAILABLE


def test_connect_errors_with_asyncpg(private_db: Database) -> None:
    """asyncpg keeps the SQLSTATE, but a refused connect is a raw OSError."""
    url = private_db.url("asyncpg")
    wrong_password = _async_connect_error(url.replace(private_db.server.password, "wrong"))
    assert sqlstate_of(wrong_password) == "28P01"
    assert classify(wrong_password).kind is ErrorKind.PERMANENT
    private_db.server.stop()
    refused = _async_connect_error(url)
    assert isinstance(refused, OSError)
    assert classify(refused).kind is ErrorKind.UNAVAILABLE


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("the database system is starting up", ErrorKind.UNAVAILABLE),
        ("the database system is in recovery mode", ErrorKind.UNAVAILABLE),
        ("the database system is not yet accepting connections", ErrorKind.UNAVAILABLE),
        ("remaining connection slots are reserved for superusers", ErrorKind.UNAVAILABLE),
        ('too many connections for role "app"', ErrorKind.UNAVAILABLE),
        ('password authentication failed for user "app"', ErrorKind.PERMANENT),
        ('no pg_hba.conf entry for host "10.0.0.1"', ErrorKind.PERMANENT),
    ],
)
def test_psycopg_connect_texts(postgres: PostgresServer, text: str, kind: ErrorKind) -> None:
    """The texts count only while connecting, where psycopg has nothing else to tell."""
    engine = sa.create_engine(postgres.url())

    @event.listens_for(engine, "do_connect")
    def refuse(*_: object) -> None:
        message = f'connection failed: connection to server at "127.0.0.1" failed: FATAL:  {text}'
        raise psycopg.OperationalError(message)

    error: DBAPIError | None = None
    try:
        with engine.connect():
            pass
    except DBAPIError as raised:
        error = raised
    finally:
        engine.dispose()
    assert error is not None
    assert classify(error).kind is kind
    # The same words on an open connection are not read at all.
    same = DBAPIError.instance("SELECT 1", None, psycopg.ProgrammingError(text), psycopg.Error)
    assert classify(same).kind is ErrorKind.PERMANENT


@pytest.mark.parametrize("driver", ["psycopg", "asyncpg"])
@pytest.mark.parametrize("kind", sorted(FAULTS, key=str))
def test_injected_faults_are_classified_as_their_kind(
    postgres: PostgresServer, driver: str, kind: ErrorKind
) -> None:
    """uow.testing faults raise the driver's own error with the SQLSTATE of their kind."""
    url = postgres.url(driver=driver)
    engine = create_async_engine(url).sync_engine if driver == "asyncpg" else sa.create_engine(url)
    dialect = engine.dialect
    original = SUPPORT.fault_error(dialect, Fault(kind, at=1))
    assert sqlstate_of(original) == FAULTS[kind][0]
    assert classify(original).kind is kind


def test_socket_of_a_unix_connection_is_left_alone(postgres: PostgresServer) -> None:
    """Bounding reads needs TCP; a unix-socket connection is not touched (and not broken)."""
    from adapters.postgresql._drivers import bound_socket  # noqa: PLC0415

    with psycopg.connect(
        host=str(postgres.socket_dir), port=postgres.port, user="postgres"
    ) as conn:
        bound_socket(conn, 3.0)
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with psycopg.connect(postgres.conninfo()) as conn:
        bound_socket(conn, 3.0)
        sock = socket.socket(fileno=conn.fileno())
        try:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 3000
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        finally:
            sock.detach()
