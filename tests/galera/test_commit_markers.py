"""Commit markers on a cluster, where the lookup after a lost COMMIT may reach another node.

Through HAProxy or an endpoint list, the lookup's fresh connection often lands on another
node than the one the COMMIT went to. There it must not KILL by connection id (ids are
per server), must wait until that node has applied what the cluster committed (a node
applies write sets after they commit elsewhere), and must outlast a 1047 while the proxy
still routes to a node that just left the Primary component.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any

import pymysql  # type: ignore[import-untyped, unused-ignore]
import pytest

from adapters.endpoints import Endpoints
from adapters.sqlalchemy import SqlAlchemyUnitOfWork, create_commit_marker_table
from servers.mysql_proxy import AfterCommitReply, CutMode, FaultProxy
from tests.galera.workload import ResolutionCounter, create_schema, place_entry
from uow import RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy.engine import Engine

    from servers.galera import GaleraCluster, GaleraNode
    from uow import Runner

pytestmark = [pytest.mark.galera, pytest.mark.filterwarnings("ignore::ResourceWarning")]

POLICY = RetryPolicy(attempts=20, timeout=30)


def _stored(cluster: GaleraCluster, database: str, key: str) -> int:
    rows = cluster.usable_node().admin(
        f"SELECT COUNT(*) FROM `{database}`.entries WHERE op_key = %s", [key], causal=True
    )
    return int(rows[0][0])


def test_commit_lost_to_a_partition_is_resolved_once_haproxy_moves(
    cluster: GaleraCluster, database: str, make_engine: Callable[..., Engine]
) -> None:
    """A COMMIT in flight when its node leaves the Primary component is resolved, then rerun."""
    create_schema(cluster, database)
    writer = cluster.which_node_haproxy_routes_to()
    assert writer is not None
    engine = make_engine(cluster.url(database), pool_size=1)
    create_commit_marker_table(engine)
    runner = SqlAlchemyUnitOfWork.factory(engine, policy=POLICY, commit_markers=True)

    def write_then_partition(uow: Any, key: str) -> int:
        place_entry(uow, key, "w")
        if uow.attempt.number == 1:
            writer.isolate(wait=None)  # this attempt's COMMIT blocks ~6 s, then 1180
        return int(uow.attempt.number)

    with ResolutionCounter() as resolutions:
        attempts = runner.run(write_then_partition, "partitioned")

    assert resolutions.outcomes == {"absent (commit marker)": 1}
    assert attempts == 2
    assert _stored(cluster, database, "partitioned") == 1


def _thread_id(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one())


def _connect(cluster: GaleraCluster, node: GaleraNode, database: str) -> Any:
    return pymysql.connect(
        host=node.host,
        port=node.port,
        user=cluster.user,
        password=cluster.password,
        database=database,
        ssl_disabled=True,
        connect_timeout=5,
    )


def _victim_with_the_same_id(
    cluster: GaleraCluster, engine: Engine, first: GaleraNode, other: GaleraNode, database: str
) -> tuple[Any, int]:
    """Open a connection on ``other`` whose id equals the id of the engine's one on ``first``.

    Connection ids count up per server; the lower side opens throwaway connections until
    both meet (HAProxy's checks open some too, hence the loop).
    """
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        mine = _thread_id(engine)
        victim = _connect(cluster, other, database)
        theirs = int(victim.thread_id())
        if theirs == mine:
            return victim, mine
        victim.close()
        if theirs < mine:
            for _ in range(mine - theirs - 1):
                _connect(cluster, other, database).close()
        else:
            engine.dispose()  # the next connection gets a new, higher id on ``first``
            for _ in range(theirs - mine - 1):
                _connect(cluster, first, database).close()
    pytest.fail("could not line up the connection ids of two nodes")


def test_marker_lookup_on_another_node_kills_nobody_there(
    cluster: GaleraCluster, database: str, make_engine: Callable[..., Engine]
) -> None:
    """A lost COMMIT looked up on another node leaves that node's connections alone."""
    create_schema(cluster, database)
    first, other = cluster.nodes[0], cluster.nodes[1]
    with _lost_replies_from(first, other, database, make_engine) as (proxy, engine, runner):
        victim, thread_id = _victim_with_the_same_id(cluster, engine, first, other, database)
        try:
            proxy.arm(AfterCommitReply(CutMode.RST))  # committed on ``first``; reply lost
            with ResolutionCounter() as resolutions:
                runner.run(place_entry, "lost-reply", "w")
            alive = other.admin(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s", [thread_id]
            )[0][0]
        finally:
            victim.close()

    assert resolutions.outcomes == {"committed (commit marker)": 1}
    assert _stored(cluster, database, "lost-reply") == 1
    assert alive == 1, f"connection {thread_id} on {other.name} was killed by the lookup"


def test_lost_commit_looked_up_on_a_lagging_node_is_found(
    cluster: GaleraCluster, database: str, make_engine: Callable[..., Engine]
) -> None:
    """A COMMIT that went through, looked up on a node still behind, is found: no duplicate."""
    create_schema(cluster, database)
    first, other = cluster.nodes[0], cluster.nodes[1]
    with _lost_replies_from(first, other, database, make_engine) as (proxy, _, runner):
        lagging = other._connect()
        try:
            # FLUSH TABLES WITH READ LOCK pauses the node's applier: it falls behind.
            lagging.cursor().execute("FLUSH TABLES WITH READ LOCK")
            release = threading.Timer(3.0, lambda: lagging.cursor().execute("UNLOCK TABLES"))
            release.start()
            proxy.arm(AfterCommitReply(CutMode.RST))  # committed on ``first``; reply lost
            with ResolutionCounter() as resolutions:
                runner.run(place_entry, "lagging", "w")
            release.join()
        finally:
            lagging.close()

    assert _stored(cluster, database, "lagging") == 1
    assert resolutions.outcomes == {"committed (commit marker)": 1}


@contextlib.contextmanager
def _lost_replies_from(
    first: GaleraNode, other: GaleraNode, database: str, make_engine: Callable[..., Engine]
) -> Iterator[tuple[FaultProxy, Engine, Runner[Any]]]:
    """An engine writing to ``first`` through a fault proxy; after a failure, to ``other``.

    Once the proxy's endpoint failed (a cut), new connections (the marker lookup's, the
    rerun's) go straight to ``other``.
    """
    with FaultProxy(first.host, first.port) as proxy:
        endpoints = Endpoints([(proxy.host, proxy.port), (other.host, other.port)], rest=60)
        engine = endpoints.install(make_engine(first.url(database), pool_size=1, max_overflow=0))
        create_commit_marker_table(engine)
        runner = SqlAlchemyUnitOfWork.factory(engine, policy=POLICY, commit_markers=True)
        runner.run(place_entry, "warm-up", "w")  # dialect set-up and the first prune
        yield proxy, engine, runner
