"""``python -m benchmarks async`` as a subprocess with tiny settings against the session's MariaDB.

Only what the harness prints is checked: every case is in the table, the async one-row
write of the unit of work costs INSERT + COMMIT only, and the throughput line is there.
Timings are never asserted: they mean nothing on a shared machine.
"""

from __future__ import annotations

import re

import pytest

from tests.e2e.test_benchmarks_smoke import run_harness, table_rows


@pytest.mark.integration
def test_async_harness_prints_every_case_and_two_statements_per_write(database_url: str) -> None:
    """The three async cases, two statements per unit-of-work write, both throughputs."""
    out = run_harness(
        "async", "--rounds", "2", "--ops", "10", "--throughput-ops", "100",
        "--throughput-rounds", "1", "--database-url", database_url,
    )  # fmt: skip
    rows = table_rows(out)
    assert set(rows) == {"session_async", "uow_async", "session_async_plain"}
    assert re.search(r"statements per op \(uow_async\): 2\.00 \(INSERT 1\.00, COMMIT 1\.00", out)
    assert re.search(r"throughput, 100 concurrent one-row writes.*async \d+ ops/s", out)
