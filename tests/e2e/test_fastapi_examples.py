"""The FastAPI example and the worker example, run as a user would, on SQLite and MariaDB.

``python -m examples.fastapi_app`` compares the runner's route with the old
``Depends(get_db)`` pattern; ``python examples/worker.py`` runs jobs in threads and
forked children and layers a task queue's retries over the runner's. Both check their
own results and exit 0 only when everything held.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]
# A download well past MariaDB's wait_timeout=1, so the server surely drops the connection.
SHORT_WAIT = {"DATABASE_WAIT_TIMEOUT": "1", "IMPORT_DOWNLOAD_SECONDS": "1.6"}
RUNTIME_ENV = ("DATABASE_URL", "DATABASE_WAIT_TIMEOUT", "IMPORT_DOWNLOAD_SECONDS")


def clean_env(**extra: str) -> dict[str, str]:
    """A user's shell: none of the examples' or the policy's variables unless given."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in RUNTIME_ENV and not key.startswith("RETRYING_UOW_")
    }
    return {**env, **extra}


def run(args: list[str], env: dict[str, str]) -> str:
    """Run with this interpreter from the checkout; return stdout of a run that exited 0."""
    result = subprocess.run(  # noqa: S603 -- our own interpreter and files
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def assert_password_hidden(database_url: str, out: str) -> None:
    password = make_url(database_url).password
    assert password
    assert password not in out
    assert "app:***@127.0.0.1" in out


def test_fastapi_example_on_sqlite() -> None:
    """Both routes work on SQLite, but only the old pattern holds a connection while it waits."""
    out = run(["-m", "examples.fastapi_app"], clean_env())
    assert "database: sqlite:///" in out
    assert "202 {'id': 1, 'status': 'pending'}; connections held during the download: 0" in out
    assert "GET /imports/1: status=done size=" in out
    assert "  connections held during the download: 1\n" in out
    assert "it worked here (no short wait_timeout), but held a pooled connection throughout" in out
    assert "FAILED" not in out
    assert out.rstrip().endswith("OK")


@pytest.mark.integration
def test_fastapi_example_on_mariadb(database_url: str) -> None:
    """On MariaDB the old pattern's background commit fails with 2006; the new one is done."""
    out = run(["-m", "examples.fastapi_app"], clean_env(DATABASE_URL=database_url, **SHORT_WAIT))
    assert "wait_timeout=1, download=1.6 s" in out
    # The placeholder's pooled connection died too: the outcome's write was rerun once.
    assert "retrying record_outcome: attempt 1/3 failed: kind=disconnect errno=2006" in out
    assert "s in the pool; server wait_timeout is 1 s" in out
    assert "GET /imports/1: status=done size=" in out
    assert re.search(r"background commit FAILED: OperationalError: \((2006|2013), ", out)
    assert re.search(r"errno=(2006|2013) connection_invalidated=True", out)
    assert "GET /imports/2: status=pending size=None" in out
    assert "as in production: the server dropped the held connection" in out
    assert out.rstrip().endswith("OK")
    assert_password_hidden(database_url, out)


def test_worker_example_on_sqlite() -> None:
    """Threads and forked children finish every job once; the queue redelivers only exhaustion."""
    out = run(["examples/worker.py"], clean_env())
    assert "jobs: {'done': 12}; deliveries: 12" in out
    assert "children exited [0, 0]; jobs: {'done': 6}" in out
    assert "delivery 1 failed (attempts exhausted, attempt 3): redeliver later" in out
    assert "delivery 1 failed (not retryable, attempt 1): dead letter" in out
    assert "flaky job: 2 deliveries, 4 attempts in all" in out
    assert "buggy job: 1 delivery, dead letter: ValueError: " in out
    assert out.rstrip().endswith("OK")


@pytest.mark.integration
def test_worker_example_on_mariadb(database_url: str) -> None:
    """On MariaDB the parent's pooled connection survives its children (dispose(close=False))."""
    out = run(["examples/worker.py"], clean_env(DATABASE_URL=database_url))
    assert "jobs: {'done': 12}; deliveries: 12" in out
    assert "children exited [0, 0]; jobs: {'done': 6}" in out
    parent = re.search(r"parent's connection: (\d+) before the fork, (\d+) after", out)
    assert parent is not None
    assert parent.group(1) == parent.group(2)
    assert "retrying claim: attempt 1/3 failed: kind=disconnect errno=2006" in out
    assert "flaky job: 2 deliveries, 4 attempts in all" in out
    assert out.rstrip().endswith("OK")
    assert_password_hidden(database_url, out)
