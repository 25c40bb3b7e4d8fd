"""Fixtures of the async runner's tests against MariaDB: a database of the test's own.

Every check of what reached the database goes through the server's admin connection
(unix socket, autocommit), never through the engine under test.
"""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from tests.async_.support import DRIVERS


@pytest.fixture
def anyio_backend() -> str:
    """The async tests run on asyncio (the drivers are asyncio's)."""
    return "asyncio"


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    """asyncmy and aiomysql in turn."""
    name: str = request.param
    return name


@pytest.fixture
def database(database_url: str) -> str:
    """Name of an empty database of the test's own on the session's MariaDB."""
    name = make_url(database_url).database
    assert name is not None
    return name
