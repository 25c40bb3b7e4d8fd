"""Fixtures of the Galera tests: one 3-node cluster with HAProxy for the session, engines.

The cluster is started once (about 12 s) and healed before each test (a node a test
killed, froze or isolated is brought back and HAProxy sees all three UP again). Every
check of what reached the database goes through a node's admin socket, never through
an engine under test.
"""

from __future__ import annotations

import gc
import uuid
import warnings
from typing import TYPE_CHECKING, Any

import pytest

from servers.galera import GaleraCluster, ensure_galera_installed
from tests.support.engines import lean_engines

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy.engine import Engine

CONNECT_ARGS: dict[str, Any] = {
    "ssl_disabled": True,  # a TLS context per connect costs ~50 ms; nothing to protect here
    "connect_timeout": 5,
    # A safety net only: every attempt bounds its reads by its own remaining budget.
    "read_timeout": 60,
    "write_timeout": 60,
}


@pytest.fixture(scope="session")
def galera() -> Iterator[GaleraCluster]:
    """One Galera cluster with HAProxy for the whole session; never skipped."""
    ensure_galera_installed()
    cluster = GaleraCluster()
    try:
        with warnings.catch_warnings():
            # PyMySQL leaks the socket of each failed connect while nodes boot.
            warnings.simplefilter("ignore", ResourceWarning)
            cluster.start()
            gc.collect()
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def cluster(galera: GaleraCluster) -> Iterator[GaleraCluster]:
    """The session's cluster, healthy at the start of the test and healed after it."""
    galera.wait_healthy()
    yield galera
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()  # sockets of connections to killed nodes, before the next test
    galera.wait_healthy()


@pytest.fixture
def database(cluster: GaleraCluster) -> Iterator[str]:
    """Name of an empty database of the test's own (replicated to every node)."""
    name = cluster.create_database(f"g_{uuid.uuid4().hex[:12]}")
    yield name
    cluster.drop_database(name)


@pytest.fixture
def make_engine(database: str) -> Iterator[Callable[..., Engine]]:
    """Build engines with ``adapters.sqlalchemy.create_engine``; disposed before the drop."""
    del database  # only orders the teardown
    yield from lean_engines(CONNECT_ARGS)
