"""PostgreSQL chaos runs: 2,000 operations through random cuts, then an audit of the database.

See tests/postgres/chaos_run.py for the workload (``python -m tests.postgres.chaos_run``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest

from servers.pg_proxy import CutMode, FaultKind
from tests.postgres.chaos_run import run_chaos

if TYPE_CHECKING:
    from tests.postgres.conftest import Database

pytestmark = pytest.mark.postgres

OPERATIONS = 2000
WORKERS = 4
MIN_CUTS = 150


@pytest.mark.parametrize("mode", ["xid", "markers"])
def test_chaos_run(db: Database, mode: str, caplog: pytest.LogCaptureFixture) -> None:
    """2,000 operations, 4 workers, random cuts: all return, each stored once, counter exact."""
    caplog.set_level(logging.CRITICAL, logger="sqlalchemy.pool")  # its reset errors are expected
    report = run_chaos(db, operations=OPERATIONS, workers=WORKERS, mode=mode)
    print(report.format())  # noqa: T201 -- the figures, shown with -s

    assert report.operations == OPERATIONS
    assert report.total_cuts >= MIN_CUTS, report.format()
    for kind, modes in (
        (FaultKind.BEFORE_COMMIT, list(CutMode)),
        (FaultKind.AFTER_COMMIT_REPLY, [CutMode.FIN, CutMode.RST]),
        (FaultKind.MID_RESULT, [CutMode.FIN, CutMode.RST]),
        (FaultKind.AT_MESSAGE, [CutMode.FIN, CutMode.RST]),
    ):
        for cut in modes:
            assert report.cut_count(kind, cut) > 0, f"no {kind.value}/{cut.value} cut"
    assert report.failed == 0, report.errors
    assert (report.lost, report.duplicated, report.phantom) == (0, 0, 0)
    assert report.counter == report.expected_counter == OPERATIONS + 1  # + the warm-up
    if mode == "markers":
        assert report.markers == report.expected_markers == OPERATIONS + 1
    # Every lost COMMIT was settled; those whose reply was cut had committed.
    assert report.resolved.get("unknown", 0) == 0
    assert report.resolved.get("committed", 0) >= report.cut_count(FaultKind.AFTER_COMMIT_REPLY)
    assert report.resolved.get("absent", 0) >= report.cut_count(FaultKind.BEFORE_COMMIT)
    assert report.consistent
