"""The PostgreSQL benchmark, run with tiny settings: its statement counts, never its timings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_counts_three_statements_per_write_and_per_read() -> None:
    """BEGIN, the statement, COMMIT: no reset ROLLBACK, no ping; the xid mode adds one read."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "postgres", "--rounds", "2", "--ops", "20"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    rows: dict[str, dict[str, str]] = {}
    header: list[str] = []
    for line in result.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| case"):
            header = cells
        elif line.startswith("| ") and not set(line) <= {"|", "-", ":", " "}:
            rows.setdefault(cells[0], dict(zip(header, cells, strict=True)))
    for case in ("uow_write", "uow_read", "session_write", "session_read"):
        assert rows[case]["stmts"] == "3.00", rows[case]
        assert rows[case]["ping"] == "0.00"
    assert rows["uow_write"]["ROLLBACK"] == rows["uow_read"]["ROLLBACK"] == "0.00"
    assert rows["uow_read"]["COMMIT"] == "1.00"  # the runner commits: no reset ROLLBACK after
    assert rows["uow_write_xid"]["stmts"] == "4.00"
    assert rows["uow_write_xid"]["SELECT"] == "1.00"
    assert "statements per op (uow_write): 3.00" in result.stdout
