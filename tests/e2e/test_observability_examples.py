"""The observability example and the example test module of the pytest plugin, as users run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def run(args: list[str], cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key != "DATABASE_URL" and not key.startswith(("RETRYING_UOW_", "PYTEST_"))
    }
    return subprocess.run(  # noqa: S603 -- our own interpreter and files
        [sys.executable, *args],
        cwd=cwd,
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def succeeded(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_observability_example_counts_retries_and_give_ups() -> None:
    """After a forced deadlock and an exhausted disconnect, the counters hold what happened."""
    out = succeeded(run([str(EXAMPLES / "observability.py")]))
    lines = out.splitlines()
    for expected in (
        'uow_retries_total{attempt="1",kind="deadlock",operation="create_task"} 1.0',
        'uow_retries_total{attempt="1",kind="disconnect",operation="create_task"} 1.0',
        'uow_retries_total{attempt="2",kind="disconnect",operation="create_task"} 1.0',
        (
            'uow_give_ups_total{kind="disconnect",operation="create_task",'
            'reason="attempts exhausted"} 1.0'
        ),
    ):
        assert expected in lines
    assert [line for line in lines if line.startswith("import ")] == [
        "import report: uow.retry attempt=1 kind=deadlock errno=1213",
        "import archive: uow.retry attempt=1 kind=disconnect errno=2013",
        "import archive: uow.retry attempt=2 kind=disconnect errno=2013",
        "import archive: uow.give_up attempt=3 kind=disconnect errno=2013",
    ]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert [(r["level"], r["uow_kind"], r["uow_attempt"]) for r in records] == [
        ("warning", "deadlock", 1),
        ("warning", "disconnect", 1),
        ("warning", "disconnect", 2),
        ("error", "disconnect", 3),
    ]
    assert records[-1]["uow_reason"] == "attempts exhausted"
    assert out.rstrip().endswith("OK")


@pytest.mark.parametrize(
    ("args", "env"),
    [
        pytest.param([], {}, id="entry point"),
        pytest.param(
            ["-p", "retrying_uow"], {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}, id="-p retrying_uow"
        ),
    ],
)
def test_example_tests_run_with_the_plugin(args: list[str], env: dict[str, str]) -> None:
    """The user's example tests find the plugin's fixtures, loaded either way, and pass."""
    test_module = str(EXAMPLES / "test_domain_service_example.py")
    result = run(["-m", "pytest", test_module, "-q", "-p", "no:cacheprovider", *args], ROOT, **env)
    assert "4 passed" in succeeded(result)


def test_example_tests_need_the_plugin() -> None:
    """Without the plugin the fixtures are missing: the passes above are the plugin's."""
    test_module = str(EXAMPLES / "test_domain_service_example.py")
    result = run(
        ["-m", "pytest", test_module, "-q", "-p", "no:cacheprovider"],
        PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
    )
    assert result.returncode != 0
    assert "fixture 'uow_rerun_check' not found" in result.stdout


def test_our_suite_runs_with_the_plugin_loaded(pytestconfig: pytest.Config) -> None:
    """The entry point is active in this very run, and its fixtures are opt-in."""
    plugin = pytestconfig.pluginmanager.get_plugin("retrying_uow")
    assert plugin is not None
    assert plugin.__name__ == "adapters.pytest_plugin"


def test_plugin_imports_nothing_of_the_library_when_loaded() -> None:
    """Loading the plugin (before coverage starts) imports neither uow nor SQLAlchemy."""
    code = (
        "import sys, adapters.pytest_plugin\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in {'uow', 'sqlalchemy'})\n"
        "assert not loaded, loaded\n"
    )
    succeeded(run(["-c", code]))


def test_an_unfired_fault_fails_the_test_at_teardown(tmp_path: Path) -> None:
    """A user's test whose injected fault never struck errors at teardown, naming the fault."""
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            from uow.testing import Fault

            def test_forgets_to_run_the_operation(uow_inject):
                uow_inject(Fault.deadlock(at=3))
            """
        )
    )
    result = run(["-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=tmp_path)
    assert result.returncode == 1, result.stdout
    assert "1 passed, 1 error" in result.stdout
    assert "injected faults never fired: deadlock (1213) at statement 3" in result.stdout
