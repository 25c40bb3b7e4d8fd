"""The ``target`` fixture: each contract test runs once per adapter and database.

Targets: the in-memory adapter, SQLAlchemy on a SQLite file, SQLAlchemy on MariaDB (a
database of the test's own on the shared server), and the async twins (in memory, and
asyncmy on MariaDB). Only the MariaDB targets start the server, and they carry the
``integration`` marker too.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from adapters.sqlalchemy import create_engine
from tests.contract.model import Base
from tests.contract.targets import AsyncTarget, MemoryTarget, SqlTarget
from tests.integration.helpers import CONNECT_ARGS

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.contract.targets import Target

_MARIADB = (pytest.mark.integration,)
TARGETS = [
    pytest.param("memory"),
    pytest.param("sqlite"),
    pytest.param("mariadb", marks=_MARIADB),
    pytest.param("async-memory"),
    pytest.param("async-mariadb", marks=_MARIADB),
]


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """One adapter on an empty database of the test's own, with the contract's tables."""
    name: str = request.param
    if name == "memory":
        yield MemoryTarget()
    elif name == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path}/contract.db")
        Base.metadata.create_all(engine)
        try:
            yield SqlTarget(name, engine)
        finally:
            engine.dispose()
    elif name == "mariadb":
        url: str = request.getfixturevalue("database_url")
        engine = create_engine(url, connect_args=CONNECT_ARGS)
        Base.metadata.create_all(engine)
        try:
            yield SqlTarget(name, engine)
        finally:
            engine.dispose()
    else:
        with asyncio.Runner() as loop:
            yield from _async_target(request, name, loop)


def _async_target(
    request: pytest.FixtureRequest, name: str, loop: asyncio.Runner
) -> Iterator[Target]:
    if name == "async-memory":
        yield AsyncTarget(name, loop)
        return
    url: str = request.getfixturevalue("database_url")
    sync_engine = create_engine(url, connect_args=CONNECT_ARGS)
    Base.metadata.create_all(sync_engine)
    async_url = make_url(url).set(drivername="mysql+asyncmy")
    engine = create_async_engine(async_url, connect_args={"connect_timeout": 5, "read_timeout": 20})
    try:
        yield AsyncTarget(name, loop, engine, marker_engine=sync_engine)
    finally:
        loop.run(engine.dispose())
        sync_engine.dispose()
