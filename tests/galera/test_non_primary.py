"""A node outside the Primary component: operations rerun elsewhere, never stick to it.

Such a node answers 1047 (``WSREP has not yet prepared node for application use``) to
every table read, write, COMMIT and even ROLLBACK, while ``SELECT 1`` and pings still
pass, so ``pool_pre_ping`` never notices. ``adapters.mysql`` classifies 1047 and 1180 as
failover and has SQLAlchemy treat them as disconnects: the pool drops the connection and
the rerun opens a new one, which goes to a healthy node through HAProxy (its external
check fails the node) or through ``adapters.endpoints`` (the failed endpoint rests).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from adapters.endpoints import Endpoint, Endpoints
from adapters.sqlalchemy import SqlAlchemyUnitOfWork
from tests.galera.workload import RetryCounter, Workers, audit, call
from tests.galera.workload import create_schema as create_entries
from uow import ErrorKind, KindPolicy, RetryPolicy, retry_details

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Engine

    from servers.galera import GaleraCluster

pytestmark = [pytest.mark.galera, pytest.mark.filterwarnings("ignore::ResourceWarning")]

NOT_READY = 1047
POLICY = RetryPolicy(attempts=20, timeout=30)
WORKERS = 2
OPERATIONS = 200


def node_name(uow: Any) -> str:
    """An operation that writes nothing but reads a table, and names its node."""
    uow.session.execute(text("SELECT COUNT(*) FROM counter")).scalar_one()
    name: str = uow.session.execute(text("SELECT @@wsrep_node_name")).scalar_one()
    return name


def test_non_primary_writer_behind_haproxy(
    cluster: GaleraCluster,
    database: str,
    make_engine: Callable[..., Engine],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """HAProxy's writer leaves the Primary component: operations rerun until on a healthy node.

    The pool holds connections to the writer from before, and HAProxy keeps routing new
    ones to it until its check has failed twice: the first attempts meet 1047.
    """
    create_entries(cluster, database)
    writer = cluster.which_node_haproxy_routes_to()
    assert writer is not None
    engine = make_engine(cluster.url(database), pool_size=WORKERS)
    retries = RetryCounter()
    runner = SqlAlchemyUnitOfWork.factory(engine, policy=POLICY, hooks=[retries])
    warm = [call(runner, f"warm-{n}", "warm") for n in range(WORKERS)]
    assert all(o.returned for o in warm)

    left_after = writer.isolate()  # returns once the node reports non-Primary
    left_at = time.monotonic()
    workers = [(f"w{n}", runner) for n in range(WORKERS)]
    with Workers(workers, retries, minimum=OPERATIONS) as run:
        other = cluster.wait_haproxy_routes_to(
            [n for n in cluster.nodes if n is not writer], timeout=30
        )
        rerouted_after = time.monotonic() - left_at
    outcomes = run.outcomes

    result = audit(cluster, database, outcomes, extra_committed=len(warm))
    with capsys.disabled():
        print(  # noqa: T201 -- the figures are the output
            f"\n  {writer.name} isolated: non-Primary after {left_after:.1f} s, HAProxy routes"
            f" to {other.name} {rerouted_after:.1f} s later; {len(outcomes)} operations,"
            f" longest {max(o.elapsed for o in outcomes):.2f} s; retries {dict(retries.by_kind)}"
        )
    assert result.failed == []
    assert result.lost == []
    assert result.duplicated == {}
    assert result.counters_consistent
    assert retries.by_kind[f"failover/{NOT_READY}"] >= WORKERS  # the pooled connections
    assert result.by_node.get(writer.name, 0) == len(warm)  # none on the isolated node
    assert result.by_node[other.name] >= len(outcomes)


def test_non_primary_node_reached_directly_is_left_for_another_endpoint(
    cluster: GaleraCluster, database: str, make_engine: Callable[..., Engine]
) -> None:
    """An engine on one node sticks to its 1047; one over several endpoints moves on."""
    create_entries(cluster, database)
    bad = cluster.nodes[-1]
    assert cluster.which_node_haproxy_routes_to() is not bad
    good = [n for n in cluster.nodes if n is not bad]
    bad.isolate()

    # One endpoint only: every rerun meets the same node until the attempts run out.
    retries = RetryCounter()
    stuck = SqlAlchemyUnitOfWork.factory(
        make_engine(bad.url(database)),
        policy=RetryPolicy(attempts=4, timeout=5, failover=KindPolicy(wait_initial=0.05)),
        hooks=[retries],
    )
    with pytest.raises(OperationalError) as raised:
        stuck.run(node_name)
    details = retry_details(raised.value)
    assert details is not None
    assert (details.kind, details.errno, details.attempt) == (ErrorKind.FAILOVER, NOT_READY, 4)

    # The bad node first in the list: one failed attempt, then it rests.
    endpoints = Endpoints([(n.host, n.port) for n in (bad, *good)], rest=60)
    engine = endpoints.install(make_engine(bad.url(database), pool_size=2))
    retries = RetryCounter()
    runner = SqlAlchemyUnitOfWork.factory(engine, policy=POLICY, hooks=[retries])
    ran_on = [runner.run(node_name) for _ in range(20)]

    assert ran_on == [good[0].name] * 20
    assert retries.by_kind == {f"failover/{NOT_READY}": 1}
    assert endpoints.resting() == [Endpoint(bad.host, bad.port)]
