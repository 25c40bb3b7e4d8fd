"""A chaos run on the Galera cluster: node crash, restart, freeze, while four workers write.

Three workers go through HAProxy (single writer); one goes straight to another node, so
the shared counter is written on two nodes at once and certification conflicts (1213)
happen all along, and more when HAProxy switches writers (fail-over after the kill, and
fail-back once the restarted node has passed its checks, while pooled connections still
point at the backup). During the run: ``kill -9`` of the node HAProxy routes to, its
restart (it catches up by IST), and later a freeze (SIGSTOP) and thaw of another node.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

from adapters.sqlalchemy import MARKER_TABLE, SqlAlchemyUnitOfWork, create_commit_marker_table
from tests.galera.conftest import CONNECT_ARGS
from tests.galera.workload import (
    ResolutionCounter,
    RetryCounter,
    Workers,
    around_faults,
    audit,
    call,
    create_schema,
)
from uow import RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Engine

    from servers.galera import GaleraCluster, GaleraNode

CAUSAL_READS = "SET SESSION wsrep_sync_wait = 1"
pytestmark = [pytest.mark.galera, pytest.mark.filterwarnings("ignore::ResourceWarning")]

MIN_OPERATIONS = 1000
HAPROXY_WORKERS = 3
POLICY = RetryPolicy(
    attempts=20,
    timeout=30,
    deadlock={"attempts": 20, "wait_max": 0.5},
    retry_budget=None,
)
"""Room for the ~6 s commit stall after a node failure, twice over, and the conflicts.

A certification conflict is over as soon as it is reported: backing off for seconds only
starves the losing node's writer (with the default 5 s ``wait_max``, 13 conflicts in a
row took one operation past its 30 s budget here). For the same reason deadlocks get the
policy's 20 attempts, not their own default of 5: a hot row conflicts many times in a row
while HAProxy switches writers.

No retry budget: the direct worker, alone on its engine against three writers through
HAProxy, loses a certification conflict on most of its operations by design, about one
retry per operation (some 30 per second), where the default budget pays 0.2 per first
attempt plus 10 per second. With it, one in eight of that worker's operations gave up
("retry budget exhausted") although each had most of its time budget left. The run is
about reruns through node faults; a fleet-wide cap on retries is another matter.
"""
CAUSAL: dict[str, Any] = {"connect_args": {**CONNECT_ARGS, "init_command": CAUSAL_READS}}
"""Causal reads for every worker connection, so their reads see what the cluster committed.

The commit markers' lookup asks for a causal read itself (``wsrep_sync_wait``): on a node
that has not applied the write set yet it would otherwise say "absent" and the rerun would
write twice (``test_commit_markers.py`` pins that).
"""
THINK = 0.005
"""Seconds each worker pauses between operations: a hot row, not a saturated one."""
FREEZE_SECONDS = 8.0


class _Schedule:
    """The faults, run from the test's thread while the workers write; ``events`` is the log."""

    def __init__(self, cluster: GaleraCluster, direct: GaleraNode) -> None:
        self.cluster = cluster
        self.direct = direct
        self.started = time.monotonic()
        self.events: list[tuple[str, float]] = []

    def note(self, label: str) -> None:
        self.events.append((label, time.monotonic()))

    def run(self) -> None:
        cluster = self.cluster
        time.sleep(3)
        victim = cluster.which_node_haproxy_routes_to()
        assert victim is not None
        assert victim is not self.direct
        self.note(f"kill -9 {victim.name} (HAProxy's writer)")
        victim.kill()
        survivor = cluster.wait_haproxy_routes_to(
            [n for n in cluster.nodes if n is not victim], timeout=30
        )
        self.note(f"HAProxy routes to {survivor.name}")
        victim.restart()  # waits for the eviction, --wsrep-recover, IST
        self.note(f"{victim.name} restarted and Synced")
        cluster.wait_haproxy_routes_to([victim], timeout=60)
        self.note(f"HAProxy fails back to {victim.name}")
        time.sleep(2)
        frozen = next(n for n in cluster.nodes if n not in {victim, self.direct})
        with cluster.frozen(frozen):
            self.note(f"freeze {frozen.name}")
            time.sleep(FREEZE_SECONDS)
        self.note(f"thaw {frozen.name}")
        frozen.wait_synced(60)
        cluster.wait_haproxy_up(60)
        self.note(f"{frozen.name} back in HAProxy")
        time.sleep(2)


def test_chaos_run_through_haproxy_with_node_faults(
    cluster: GaleraCluster,
    database: str,
    make_engine: Callable[..., Engine],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """1,000+ operations survive a node crash, its restart and a freeze: nothing lost or doubled."""
    create_schema(cluster, database)
    direct = cluster.nodes[-1]  # n3: never the HAProxy writer before the faults
    assert cluster.which_node_haproxy_routes_to() is not direct
    via_haproxy = make_engine(cluster.url(database), pool_size=HAPROXY_WORKERS, **CAUSAL)
    to_direct = make_engine(direct.url(database), pool_size=1, **CAUSAL)
    create_commit_marker_table(via_haproxy)
    retries = RetryCounter()
    runners: dict[str, Any] = {
        name: SqlAlchemyUnitOfWork.factory(
            engine, policy=POLICY, hooks=[retries], commit_markers=True
        )
        for name, engine in (("haproxy", via_haproxy), ("direct", to_direct))
    }
    # One operation per engine before the faults: dialect set-up, the markers' first prune.
    warmups = [call(runner, f"warmup-{name}", name) for name, runner in runners.items()]
    assert all(o.returned for o in warmups), warmups
    workers = [(f"h{i}", runners["haproxy"]) for i in range(HAPROXY_WORKERS)]
    workers.append((f"d-{direct.name}", runners["direct"]))

    schedule = _Schedule(cluster, direct)
    with (
        ResolutionCounter() as resolutions,
        Workers(workers, retries, MIN_OPERATIONS, THINK) as run,
    ):
        schedule.run()
    outcomes = run.outcomes
    result = audit(
        cluster, database, outcomes, extra_committed=len(warmups), markers_table=MARKER_TABLE
    )
    premature = [o for o in result.failed if o.reason != "time budget exhausted"]
    elapsed = time.monotonic() - schedule.started
    lines = [
        (
            f"--- Galera chaos run: {result.operations} operations, {len(workers)} workers"
            f" ({HAPROXY_WORKERS} through HAProxy, 1 on {direct.name}), {elapsed:.1f} s"
        ),
        (
            f"  returned {result.returned}, failed {len(result.failed)}"
            f" (with budget left: {len(premature)}); committed by node {result.by_node}"
        ),
        (
            f"  retries {retries.total}: {dict(retries.by_kind.most_common())};"
            f" 1213 at COMMIT {retries.conflicts_at_commit}; gave up {dict(retries.give_ups)}"
        ),
        f"  lost COMMITs resolved: {dict(resolutions.outcomes)}",
        (
            f"  lost {len(result.lost)}, duplicated {len(result.duplicated)},"
            f" phantom {len(result.phantom)}; counter by node {result.counter_by_node}"
            f" (expected {result.expected_counter}); markers {result.markers}"
        ),
    ]
    lines += [
        f"  t={when - schedule.started:5.1f} s  {label:<34} longest pause {pause:5.2f} s,"
        f" retries after it {dict(kinds)}"
        for label, when, pause, kinds in around_faults(outcomes, schedule.events)
    ]
    lines += [
        f"  slowest: {o.key} {o.elapsed:.2f} s from t={o.started - schedule.started:.1f} s,"
        f" retries {o.retries}"
        for o in sorted(outcomes, key=lambda o: -o.elapsed)[:3]
    ]
    lines += [f"  failure: {o}" for o in result.failed[:5]]
    with capsys.disabled():
        print("\n" + "\n".join(lines))  # noqa: T201 -- the figures are the output

    assert result.operations >= MIN_OPERATIONS
    assert result.lost == []
    assert result.duplicated == {}
    assert result.phantom == []
    assert premature == []
    assert result.counters_consistent, (result.counter_by_node, result.expected_counter)
    assert result.markers == result.expected_counter
    assert retries.by_kind["deadlock/1213"] > 0  # the cross-node writers did conflict
