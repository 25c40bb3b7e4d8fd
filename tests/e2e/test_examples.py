"""The examples, run as subprocesses with this interpreter (the venv's), as a user would.

Each example runs on SQLite (no configuration) and against the throwaway MariaDB server
through ``DATABASE_URL``. The README's and the documentation's code: ``test_docs.py``.
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
# Short enough for the suite, long enough that MariaDB's wait_timeout=1 surely fires.
FAST_INCIDENT = ["--wait-timeout", "1", "--download-seconds", "1.6"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no DATABASE_URL or policy variables unless given."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key != "DATABASE_URL" and not key.startswith("RETRYING_UOW_")
    }
    return {**env, **extra}


def run(args: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 -- our own interpreter and files
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def succeeded(result: subprocess.CompletedProcess[str]) -> str:
    """Return the output of a run that must have exited 0; show all of it when it did not."""
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def run_example(name: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, str(ROOT / "examples" / name), *args], env)


def test_seed_incident_on_sqlite() -> None:
    """On SQLite the emulated wait_timeout makes the naive commit fail and the runner rerun once."""
    out = succeeded(run_example("seed_incident.py", *FAST_INCIDENT, env=clean_env()))
    assert "wait_timeout is EMULATED" in out
    assert "[emulated server] idle" in out
    assert "commit FAILED: ProgrammingError: Cannot operate on a closed database." in out
    assert "errno=None connection_invalidated=True" in out
    assert "WARNING retrying_uow: retrying record_download: attempt 1/3 failed: " in out
    assert "kind=disconnect" in out
    assert "record_download took 2 attempt(s)" in out
    assert re.search(r"rows for units-\w+: 1\n", out)
    assert out.rstrip().endswith("wrote exactly one row")


@pytest.mark.integration
def test_seed_incident_on_mariadb(database_url: str) -> None:
    """On MariaDB wait_timeout gives 2006, the runner reruns once, the password stays hidden."""
    env = clean_env(DATABASE_URL=database_url)
    result = run_example("seed_incident.py", *FAST_INCIDENT, env=env)
    out = succeeded(result)
    assert "EMULATED" not in out
    assert "commit FAILED: OperationalError: (2006, " in out
    assert "errno=2006 connection_invalidated=True" in out
    assert "attempt 1/3 failed: kind=disconnect errno=2006 error=sqlalchemy.exc.Operation" in out
    assert "hook: attempt 1 failed: kind=disconnect errno=2006" in out
    assert re.search(r"rows for units-\w+: 1\n", out)
    assert out.rstrip().endswith("wrote exactly one row")
    password = make_url(database_url).password
    assert password
    assert password not in out + result.stderr
    assert "app:***@127.0.0.1" in out


def test_seed_incident_fails_when_nothing_goes_wrong() -> None:
    """A download shorter than wait_timeout breaks nothing, so the example exits 1, not 0."""
    result = run_example(
        "seed_incident.py", "--wait-timeout", "5", "--download-seconds", "0.1", env=clean_env()
    )
    assert result.returncode == 1
    assert "UNEXPECTED: naive failed=False" in result.stdout


def test_domain_service_on_sqlite() -> None:
    """The domain service runs through all three entry points on SQLite and in memory."""
    out = succeeded(run_example("domain_service.py", env=clean_env()))
    assert "SQLAlchemy on sqlite://" in out
    assert out.count("operation: ") == 2
    assert out.count("in one transaction") == 2
    assert out.count("event:     TaskCompleted(") == 2
    assert "after a simulated deadlock: 2 attempts" in out
    assert out.rstrip().endswith("OK")


@pytest.mark.integration
def test_domain_service_on_mariadb(database_url: str) -> None:
    """The domain service's own assertions hold against MariaDB."""
    out = succeeded(run_example("domain_service.py", env=clean_env(DATABASE_URL=database_url)))
    assert "SQLAlchemy on mysql+pymysql://app:***@" in out
    assert out.rstrip().endswith("OK")


def test_scripts_example_runs_the_main_example() -> None:
    """`scripts/example` (the README's command) runs the seed incident and passes its arguments."""
    script = ROOT / "scripts" / "example"
    assert os.access(script, os.X_OK)
    assert "wrote exactly one row" in succeeded(run([str(script), *FAST_INCIDENT], clean_env()))


def test_ci_runs_the_readme_test_command() -> None:
    """CI's entry point calls scripts/test, the command the README gives."""
    commands = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert any(re.fullmatch(r"(exec )?scripts/test( .*)?", command) for command in commands)
    assert os.access(ROOT / "scripts" / "test", os.X_OK)
