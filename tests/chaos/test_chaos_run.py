"""Chaos runs: thousands of operations through random cuts, then an audit of the database.

See tests/chaos/chaos_run.py for the workload; ``scripts/chaos`` runs the same code and
prints its figures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from servers.mysql_proxy import CutMode, FaultKind
from tests.chaos.chaos_run import ChaosReport, run_chaos

if TYPE_CHECKING:
    from servers.mariadb import MariaDBServer

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

OPERATIONS = 2000
WORKERS = 4
MIN_CUTS = 150


def assert_every_cut_happened(report: ChaosReport) -> None:
    assert report.total_cuts >= MIN_CUTS, report.format()
    for kind in (
        FaultKind.BEFORE_COMMIT,
        FaultKind.AFTER_COMMIT_REPLY,
        FaultKind.MID_RESULT,
        FaultKind.AT_PACKET,
    ):
        for mode in CutMode:
            assert report.cut_count(kind, mode) > 0, f"no {kind.value}/{mode.value} cut"


def test_chaos_run_with_commit_markers(mariadb: MariaDBServer, database: str) -> None:
    """2,000 operations, 4 workers, random cuts: all succeed, each stored once, counter exact."""
    report = run_chaos(mariadb, database, operations=OPERATIONS, workers=WORKERS, markers=True)
    print(report.format())  # noqa: T201 -- the figures, shown with -s
    assert report.operations == OPERATIONS
    assert_every_cut_happened(report)
    # Nothing failed, nothing was lost or written twice.
    assert report.failed == 0, report.errors
    assert report.commit_unknown == 0
    assert report.premature_failures == 0
    assert (report.lost, report.duplicated, report.phantom) == (0, 0, 0)
    # The counter saw each operation once, and each committed attempt left one marker.
    assert report.counter == report.expected_counter == OPERATIONS + 1  # + the warm-up
    assert report.markers == report.expected_markers == OPERATIONS + 1
    # Every lost COMMIT was settled by its marker: committed ones returned, absent reran.
    assert report.resolved.get("unknown", 0) == 0
    assert report.resolved.get("committed", 0) == report.cut_count(FaultKind.AFTER_COMMIT_REPLY)
    # AtPacket can land on a COMMIT too (before the server saw it).
    assert report.resolved.get("absent", 0) >= report.cut_count(FaultKind.BEFORE_COMMIT)
    assert report.retries >= report.resolved["absent"] + report.cut_count(FaultKind.MID_RESULT)
    assert report.consistent


def test_chaos_run_without_markers(mariadb: MariaDBServer, database: str) -> None:
    """No markers: each ambiguous COMMIT raises CommitOutcomeUnknown, nothing is duplicated."""
    report = run_chaos(mariadb, database, operations=OPERATIONS, workers=WORKERS, markers=False)
    print(report.format())  # noqa: T201
    assert report.operations == OPERATIONS
    assert_every_cut_happened(report)
    # Every failure is an ambiguous COMMIT, each one surfaced and logged as unknown.
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
