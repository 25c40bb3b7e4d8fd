"""Waits are bounded by the operation's remaining budget: the connect, and every read."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import event, text

from adapters.postgresql._drivers import raw
from tests.postgres.conftest import ALL_DRIVERS
from uow import RetryPolicy

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from tests.postgres.conftest import Database, Flavour

pytestmark = pytest.mark.postgres

BUDGET = 12.0


def _socket_options(dbapi_connection: Any) -> dict[str, int]:
    connection = raw(dbapi_connection)
    if hasattr(connection, "fileno"):
        fileno = connection.fileno()
    else:  # asyncpg
        fileno = connection._transport.get_extra_info("socket").fileno()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fileno)
    try:
        return {
            "user_timeout": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
            "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            "idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            "interval": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            "count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        }
    finally:
        sock.detach()


@ALL_DRIVERS
def test_connect_and_reads_are_bounded_by_the_budget(db: Database, flavour: Flavour) -> None:
    """The connect gets the budget as its timeout; the socket gives up on a silent peer."""
    engine = flavour.engine(db.url(flavour.driver))
    sync_engine = getattr(engine, "sync_engine", engine)
    connects: list[dict[str, Any]] = []

    @event.listens_for(sync_engine, "do_connect")
    def seen(_dialect: Any, _record: Any, _cargs: Any, params: dict[str, Any]) -> None:
        connects.append(dict(params))

    runner = flavour.runner(engine, policy=RetryPolicy(timeout=BUDGET))

    def look(session: Session, uow: Any) -> dict[str, int]:
        del uow
        session.execute(text("SELECT 1"))
        return _socket_options(session.connection().connection.dbapi_connection)

    options = flavour.run(runner, look)

    [params] = connects
    if flavour.driver == "asyncpg":
        assert 0 < params["timeout"] <= BUDGET
    else:
        assert 2 <= params["connect_timeout"] <= BUDGET
        assert 0 < params["tcp_user_timeout"] <= BUDGET * 1000
        assert params["keepalives"] == 1
    assert BUDGET * 1000 * 0.5 < options["user_timeout"] <= BUDGET * 1000
    assert options["keepalive"] == 1
    assert 1 <= options["idle"] <= BUDGET / 2
    assert 1 <= options["interval"] <= BUDGET / 4
    assert options["count"] == 2
