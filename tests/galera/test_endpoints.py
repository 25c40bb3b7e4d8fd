"""``adapters.endpoints``: the order of endpoints, their rest, and a dead one skipped."""

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


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_endpoints_parse_every_spelling() -> None:
    """Host, host:port, (host, port) and Endpoint all give an Endpoint."""
    given = ["db1", "db2:3307", ("db3", 3308), Endpoint("db4", 3309)]
    assert Endpoints(given).endpoints == (
        Endpoint("db1", 3306),
        Endpoint("db2", 3307),
        Endpoint("db3", 3308),
        Endpoint("db4", 3309),
    )
    with pytest.raises(ValueError, match="at least one"):
        Endpoints([])
    with pytest.raises(ValueError, match="rest"):
        Endpoints(["db1"], rest=-1)


def test_a_failed_endpoint_rests_then_comes_back_first() -> None:
    """A failed endpoint goes last for ``rest`` seconds, then back to its place."""
    clock = Clock()
    endpoints = Endpoints(["a:1", "b:2", "c:3"], rest=10, clock=clock)
    a, b, c = endpoints.endpoints
    endpoints.mark_failed(a, "test")
    assert endpoints.order() == [b, c, a]
    assert endpoints.resting() == [a]
    clock.now += 5
    endpoints.mark_failed(b, "test")
    assert endpoints.order() == [c, a, b]  # all resting but c; a's rest ends first
    clock.now += 5.01
    assert endpoints.order() == [a, c, b]
    assert endpoints.resting() == [b]


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
