"""Certification conflicts: the same rows written through two nodes at once.

Galera certifies a transaction when it commits: of two concurrent transactions that
wrote the same row on different nodes, the second to certify fails with 1213 at COMMIT
(or, when the winner's write set reaches its node first, on its next statement). The
runner reruns it; nothing is lost, and nothing commits half.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from adapters.sqlalchemy import SqlAlchemyUnitOfWork
from tests.galera.workload import RetryCounter
from uow import RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Engine

    from servers.galera import GaleraCluster

pytestmark = [pytest.mark.galera, pytest.mark.filterwarnings("ignore::ResourceWarning")]

ROWS = (1, 2, 3)
OPERATIONS = 60
POLICY = RetryPolicy(attempts=20, timeout=30, deadlock={"attempts": 20})
"""Conflicts are the point here: deadlocks get 20 attempts, not their own default of 5."""
DEADLOCK = 1213


def add_to_rows(uow: Any, delta: int) -> str:
    """Add ``delta`` to every row, in the same order; return the node that ran it."""
    for row in ROWS:
        uow.session.execute(
            text("UPDATE tally SET n = n + :d WHERE id = :id"), {"d": delta, "id": row}
        )
    node: str = uow.session.execute(text("SELECT @@wsrep_node_name")).scalar_one()
    return node


def _tally(cluster: GaleraCluster, database: str) -> dict[int, int]:
    rows = cluster.usable_node().admin(f"SELECT id, n FROM `{database}`.tally", causal=True)
    return {int(row_id): int(n) for row_id, n in rows}


def _create_tally(cluster: GaleraCluster, database: str) -> None:
    cluster.admin(f"CREATE TABLE `{database}`.tally (id INT PRIMARY KEY, n BIGINT NOT NULL)")
    cluster.admin(f"INSERT INTO `{database}`.tally VALUES (1, 0), (2, 0), (3, 0)")


def test_two_writers_on_two_nodes_end_with_the_serial_result(
    cluster: GaleraCluster, database: str, make_engine: Callable[..., Engine]
) -> None:
    """Two workers on n1 and n2 update the same rows: all commit; the sums are exact."""
    _create_tally(cluster, database)
    retries = RetryCounter()
    first, second = cluster.nodes[0], cluster.nodes[1]
    deltas = {first.name: 1, second.name: 1000}
    runners = {
        node.name: SqlAlchemyUnitOfWork.factory(
            make_engine(node.url(database), pool_size=1), policy=POLICY, hooks=[retries]
        )
        for node in (first, second)
    }
    # Both workers start each operation together, so their transactions overlap.
    barrier = threading.Barrier(2, timeout=60)
    ran_on: dict[str, list[str]] = {name: [] for name in runners}
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            for _ in range(OPERATIONS):
                barrier.wait()
                ran_on[name].append(runners[name].run(add_to_rows, deltas[name]))
        except BaseException as error:
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(name,)) for name in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert errors == []
    assert ran_on == {name: [name] * OPERATIONS for name in runners}  # every call returned
    serial = {row: OPERATIONS * sum(deltas.values()) for row in ROWS}
    assert _tally(cluster, database) == serial
    assert retries.give_ups == {}
    assert set(retries.by_kind) == {f"deadlock/{DEADLOCK}"}
    assert retries.conflicts_at_commit > 0, retries.by_kind  # certification failures
    print(  # noqa: T201 -- the figures are the output (shown with -s)
        f"\n  two writers: {2 * OPERATIONS} operations, {retries.total} reruns after 1213,"
        f" {retries.conflicts_at_commit} of them at COMMIT"
    )


def test_swallowed_certification_conflict_is_not_committed(
    cluster: GaleraCluster, database: str, make_engine: Callable[..., Engine]
) -> None:
    """Code that catches the 1213 of a conflict and returns is rerun, not committed as nothing.

    On Galera a COMMIT after a brute-force abort returns OK and the writes are gone; the
    runner refuses to commit an attempt whose code swallowed a transient error.
    """
    _create_tally(cluster, database)
    first, second = cluster.nodes[0], cluster.nodes[1]
    runner = SqlAlchemyUnitOfWork.factory(
        make_engine(second.url(database), pool_size=1), policy=POLICY
    )
    caught: list[int | None] = []

    def update_then_swallow(uow: SqlAlchemyUnitOfWork) -> int:
        uow.session.execute(text("UPDATE tally SET n = n + 1000 WHERE id = 1"))
        if uow.attempt.number == 1:
            # The same row, committed on another node: its write set aborts ours.
            first.admin(f"UPDATE `{database}`.tally SET n = n + 1 WHERE id = 1")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    uow.session.execute(text("SELECT n FROM tally WHERE id = 2"))
                except OperationalError as error:  # the mistake under test
                    caught.append(error.orig.args[0] if error.orig is not None else None)
                    break
                time.sleep(0.05)
        return uow.attempt.number

    attempts = runner.run(update_then_swallow)

    assert caught == [DEADLOCK]
    assert attempts == 2
    assert _tally(cluster, database)[1] == 1001
