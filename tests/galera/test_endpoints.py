"""``adapters.endpoints`` on the cluster: a dead endpoint is skipped (the rest: tests/unit)."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import text

from adapters.endpoints import Endpoint, Endpoints

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Engine

    from servers.galera import GaleraCluster

pytestmark = [pytest.mark.galera, pytest.mark.filterwarnings("ignore::ResourceWarning")]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_endpoint_that_refuses_connections_is_skipped(
    cluster: GaleraCluster, database: str, make_engine: Callable[..., Engine]
) -> None:
    """Nothing listens on the first endpoint: connections go to the next one, it rests."""
    dead = Endpoint("127.0.0.1", _closed_port())
    node = cluster.nodes[0]
    endpoints = Endpoints([dead, (node.host, node.port)], rest=60)
    engine = endpoints.install(make_engine(node.url(database)))
    with engine.connect() as connection:
        name = connection.execute(text("SELECT @@wsrep_node_name")).scalar_one()
    assert name == node.name
    assert endpoints.resting() == [dead]
