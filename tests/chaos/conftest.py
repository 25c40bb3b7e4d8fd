"""Fixtures of the chaos tests: the MariaDB server, a fault proxy in front of it, engines.

Every check of what reached the database goes through the server's admin connection
(unix socket, autocommit), never through the engine or the proxy under test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy.engine import make_url

from servers.mysql_proxy import FaultProxy
from tests.support.engines import lean_engines

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy.engine import Engine

    from servers.mariadb import MariaDBServer

CONNECT_ARGS: dict[str, Any] = {
    # PyMySQL 1.2 negotiates TLS when the server offers it; the proxy cannot see inside.
    "ssl_disabled": True,
    "connect_timeout": 5,
}


@pytest.fixture
def database(database_url: str) -> str:
    """Name of an empty database of the test's own on ``mariadb``."""
    name = make_url(database_url).database
    assert name is not None
    return name


@pytest.fixture
def proxy(mariadb: MariaDBServer, database: str) -> Iterator[FaultProxy]:
    """A fault proxy in front of ``mariadb``; stopped before the test's database is dropped."""
    del database  # only orders the teardown: connections the proxy holds end first
    with FaultProxy(mariadb.host, mariadb.port) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def make_engine() -> Iterator[Callable[..., Engine]]:
    """Build engines with ``adapters.sqlalchemy.create_engine``; disposed at test end."""
    yield from lean_engines(CONNECT_ARGS)
