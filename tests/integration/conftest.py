"""Fixtures of the integration tests: databases with the schema, engines, a recording hook.

Every check of what reached the database goes through the server's admin connection
(unix socket, autocommit), never through the engine under test, so the pool being
tested is not disturbed by the assertions.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from tests.integration.helpers import (
    CONNECT_ARGS,
    Database,
    Recorder,
    with_schema,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from servers.mariadb import MariaDBServer


@pytest.fixture
def db(mariadb: MariaDBServer, database_url: str) -> Database:
    """A fresh database with the tasks and counters tables on the shared server."""
    name = make_url(database_url).database
    assert name is not None
    return with_schema(mariadb, name)


@pytest.fixture
def private_db(private_mariadb: MariaDBServer) -> Database:
    """The app database with the schema on a server of the test's own (free to kill)."""
    name = private_mariadb.create_database(f"t_{uuid.uuid4().hex[:12]}")
    return with_schema(private_mariadb, name)


@pytest.fixture
def make_engine() -> Iterator[Callable[..., Engine]]:
    """Build PyMySQL engines with bounded client timeouts; all are disposed at test end."""
    engines: list[Engine] = []

    def make(url: str, *, init_command: str | None = None, **kwargs: Any) -> Engine:
        connect_args = dict(CONNECT_ARGS)
        if init_command is not None:
            connect_args["init_command"] = init_command
        engine = sa.create_engine(url, connect_args=connect_args, **kwargs)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()
