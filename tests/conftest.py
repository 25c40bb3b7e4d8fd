"""Fixtures shared by every test layer: the throwaway MariaDB and PostgreSQL servers.

A test that needs MariaDB asks for ``mariadb`` (one server for the session) or
``private_mariadb`` (its own server, for tests that kill or restart it); for
PostgreSQL, ``postgres`` and ``private_postgres``. None ever skips: a server that
cannot start fails the test, in CI and locally alike.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest

from servers.mariadb import MariaDBServer, ensure_mariadb_installed
from uow.testing import set_testing

if TYPE_CHECKING:
    from collections.abc import Iterator

    from servers.postgres import PostgresServer


@pytest.fixture(autouse=True)
def _reset_testing_switch() -> Iterator[None]:
    """Every test starts and ends with the testing switch off."""
    with set_testing(False):
        yield


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDBServer]:
    """One MariaDB server for the whole session; tests use their own databases on it."""
    ensure_mariadb_installed()
    server = MariaDBServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def private_mariadb() -> Iterator[MariaDBServer]:
    """A MariaDB server of the test's own, free to be killed and restarted."""
    ensure_mariadb_installed()
    server = MariaDBServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


def _fresh_database(server: MariaDBServer) -> Iterator[str]:
    name = server.create_database(f"t_{uuid.uuid4().hex[:12]}")
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)


@pytest.fixture
def database_url(mariadb: MariaDBServer) -> Iterator[str]:
    """URL (app user over TCP) of an empty database of the test's own on ``mariadb``."""
    yield from _fresh_database(mariadb)


def _start_postgres() -> PostgresServer:
    # Imported here: the drivers are only needed by the tests that ask for PostgreSQL.
    from servers.postgres import PostgresServer, ensure_postgres_installed  # noqa: PLC0415

    ensure_postgres_installed()
    server = PostgresServer()
    try:
        server.start()
    except BaseException:
        server.cleanup()
        raise
    return server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session; tests use their own databases on it."""
    server = _start_postgres()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test's own, free to be killed, frozen and promoted."""
    server = _start_postgres()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def postgres_database(postgres: PostgresServer) -> Iterator[str]:
    """Name of an empty database of the test's own on ``postgres``, owned by the app role."""
    name = postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
    try:
        yield name
    finally:
        postgres.drop_database(name)
