"""The benchmark harness, run as a subprocess with tiny settings against the session's MariaDB.

Only what the harness prints is checked: the table lists every case, and the server's
counters show two statements per one-row unit-of-work write on the lean engine.
Timings are never asserted: they mean nothing on a shared machine.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.cases import CASES

ROOT = Path(__file__).resolve().parents[2]


def run_harness(*args: str) -> str:
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    result = subprocess.run(  # noqa: S603 -- our own interpreter and package
        [sys.executable, "-m", "benchmarks", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def table_rows(output: str) -> dict[str, list[str]]:
    """The first row of each case in the printed table, as cells."""
    rows: dict[str, list[str]] = {}
    for line in output.splitlines():
        if not line.startswith("| ") or set(line) <= {"|", "-", ":", " "}:
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[0] and cells[0] != "case":
            rows.setdefault(cells[0], cells)
    return rows


@pytest.mark.integration
def test_harness_prints_every_case_and_two_statements_per_write(database_url: str) -> None:
    """Every case is in the table; the lean unit-of-work write costs INSERT + COMMIT only."""
    out = run_harness("--rounds", "2", "--ops", "20", "--database-url", database_url)
    header = next(line for line in out.splitlines() if line.startswith("| case"))
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    rows = table_rows(out)
    assert set(rows) == {case.name for case in CASES}
    write = dict(zip(columns, rows["uow_write"], strict=True))
    assert write["round trips"] == "2.00"
    assert (write["INSERT"], write["COMMIT"], write["ROLLBACK"]) == ("1.00", "1.00", "0.00")
    assert re.search(r"statements per one-row write \(uow_write\): 2\.00", out)


def test_harness_runs_sqlite_cases_without_a_server() -> None:
    """With SQLite cases only, the harness needs no server and prints no statement counts."""
    out = run_harness("--rounds", "2", "--ops", "5", "--only", "sqlite_session", "sqlite_uow_write")
    rows = table_rows(out)
    assert set(rows) == {"sqlite_session", "sqlite_uow_write"}
    assert rows["sqlite_uow_write"][1] == "sqlite"
    assert "server:" not in out
