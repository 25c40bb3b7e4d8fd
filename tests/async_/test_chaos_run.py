"""Async chaos runs: 2,000 operations from 50 tasks through random cuts, then an audit.

See ``tests/async_/chaos_run.py`` for the workload (the sync chaos run's, awaited);
``python -m tests.async_.chaos_run`` runs the same code for longer and prints its figures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from servers.mysql_proxy import FaultKind
from tests.async_.chaos_run import run_chaos_async
from tests.chaos.test_chaos_run import assert_every_cut_happened

if TYPE_CHECKING:
    from servers.mariadb import MariaDBServer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.chaos,
    pytest.mark.async_runner,
    pytest.mark.anyio,
]

OPERATIONS = 2000
TASKS = 50


async def test_async_chaos_run_with_commit_markers(
    mariadb: MariaDBServer, database: str, driver: str
) -> None:
    """2,000 operations, 50 tasks, random cuts: all succeed, each stored once, counter exact."""
    report = await run_chaos_async(
        mariadb, database, driver=driver, operations=OPERATIONS, tasks=TASKS, markers=True
    )
    print(f"{driver}: {report.format()}")  # noqa: T201 -- the figures, shown with -s
    assert report.operations == OPERATIONS
    assert_every_cut_happened(report)
    assert report.failed == 0, report.errors
    assert report.commit_unknown == 0
    assert report.premature_failures == 0
    assert (report.lost, report.duplicated, report.phantom) == (0, 0, 0)
    assert report.counter == report.expected_counter == OPERATIONS + 1  # + the warm-up
    assert report.markers == report.expected_markers == OPERATIONS + 1
    # Every lost COMMIT was settled by its marker: committed ones returned, absent reran.
    assert report.resolved.get("unknown", 0) == 0
    assert report.resolved.get("committed", 0) == report.cut_count(FaultKind.AFTER_COMMIT_REPLY)
    assert report.resolved.get("absent", 0) >= report.cut_count(FaultKind.BEFORE_COMMIT)
    assert report.consistent


async def test_async_chaos_run_without_markers(
    mariadb: MariaDBServer, database: str, driver: str
) -> None:
    """No markers: each ambiguous COMMIT raises CommitOutcomeUnknown, nothing is duplicated."""
    report = await run_chaos_async(
        mariadb, database, driver=driver, operations=OPERATIONS, tasks=TASKS, markers=False
    )
    print(f"{driver}: {report.format()}")  # noqa: T201
    assert report.operations == OPERATIONS
    assert_every_cut_happened(report)
    assert report.failed == report.commit_unknown == report.resolved.get("unknown", 0)
    assert report.resolved.get("committed", 0) == report.resolved.get("absent", 0) == 0
    assert report.premature_failures == 0
    commit_cuts = report.cut_count(FaultKind.BEFORE_COMMIT) + report.cut_count(
        FaultKind.AFTER_COMMIT_REPLY
    )
    assert report.commit_unknown >= commit_cuts
    # Those the server had committed are exactly the ones whose reply was cut.
    assert report.commit_unknown_committed == report.cut_count(FaultKind.AFTER_COMMIT_REPLY)
    assert (report.lost, report.duplicated, report.phantom) == (0, 0, 0)
    assert report.counter == report.expected_counter
    assert report.expected_counter == report.succeeded + report.commit_unknown_committed + 1
    assert report.consistent
