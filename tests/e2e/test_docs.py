"""The README and the documentation site: their code runs, type-checks, and says what is true.

Every ```python block marked ``<!-- test: run -->`` runs: per page, in order, as one
script (a reader's session). The same script passes ``mypy --strict`` with the project's
configuration. The site builds with ``mkdocs build --strict`` (an unresolved cross
reference, a broken link or a docstring griffe cannot read fails it), and the tables
that restate the code (the default retry schedule, the MySQL errno table, the marker
DDL) are compared with the code.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML comes with MkDocs, without stubs
from sqlalchemy.dialects import mysql

from adapters.mysql import ERRNO_KINDS
from adapters.sqlalchemy import SqlAlchemyUnitOfWork, commit_marker_ddl
from uow import ErrorKind, RetryPolicy

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
RUN_MARKER = "<!-- test: run -->"
SCHEDULE_RETRIES = 8


def python_blocks(text: str) -> list[tuple[int, bool, str]]:
    """Every ```python block of a Markdown text: (first line number, runnable, code)."""
    blocks = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        if lines[index].strip() == "```python":
            runnable = index > 0 and lines[index - 1].strip() == RUN_MARKER
            end = lines.index("```", index + 1)
            blocks.append((index + 2, runnable, "\n".join(lines[index + 1 : end]) + "\n"))
            index = end
        index += 1
    return blocks


def name_of(page: Path) -> str:
    return str(page.relative_to(ROOT))


def script_of(page: Path) -> str:
    """The page's runnable blocks, in order, as one script."""
    blocks = [block for block in python_blocks(page.read_text()) if block[1]]
    return "".join(f"# --- {name_of(page)} line {line}\n{code}" for line, _, code in blocks)


RUNNABLE = [page for page in PAGES if script_of(page)]


def clean_env(**extra: str) -> dict[str, str]:
    """A user's shell: no DATABASE_URL or policy variables."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key != "DATABASE_URL" and not key.startswith("RETRYING_UOW_")
    }
    return {**env, **extra}


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 -- our own interpreter and files
        args,
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def succeeded(result: subprocess.CompletedProcess[str]) -> str:
    """Return the output of a run that must have exited 0; show all of it when it did not."""
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def module_name(page: Path) -> str:
    return "page_" + re.sub(r"\W", "_", name_of(page).removesuffix(".md"))


@pytest.mark.parametrize("page", RUNNABLE, ids=name_of)
def test_runnable_blocks_run_in_order(page: Path, tmp_path: Path) -> None:
    """A page's runnable blocks run, in order, as one script, in an empty folder."""
    script = tmp_path / f"{module_name(page)}.py"
    script.write_text(script_of(page))
    succeeded(run([sys.executable, str(script)], cwd=tmp_path))


def test_runnable_blocks_pass_mypy_strict(tmp_path: Path) -> None:
    """Each page's runnable blocks, as one module, pass mypy --strict with the project's config."""
    files = []
    for page in RUNNABLE:
        module = tmp_path / f"{module_name(page)}.py"
        module.write_text(script_of(page))
        files.append(str(module))
    mypy = [sys.executable, "-m", "mypy", "--strict", "--config-file", "pyproject.toml", *files]
    result = run(mypy, cwd=ROOT, MYPYPATH=str(ROOT))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_python_block_compiles() -> None:
    """Blocks that do not run (FastAPI fragments, Celery) are still valid Python."""
    for page in PAGES:
        for line, _, code in python_blocks(page.read_text()):
            compile(code, f"{name_of(page)}:{line}", "exec")


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    """`mkdocs build --strict`: every reference resolves, every docstring renders."""
    result = run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        NO_MKDOCS_2_WARNING="1",
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "reference" / "api" / "uow" / "index.html").is_file()


def test_every_page_is_in_the_navigation() -> None:
    """No page is built without a way to reach it, and the navigation names no missing page."""

    def pages_of(entries: list[object]) -> list[str]:
        found: list[str] = []
        for entry in entries:
            assert isinstance(entry, dict)
            for value in entry.values():
                found.extend([value] if isinstance(value, str) else pages_of(value))
        return found

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    in_nav = pages_of(config["nav"])
    on_disk = [str(page.relative_to(DOCS)) for page in DOCS.rglob("*.md")]
    assert sorted(in_nav) == sorted(on_disk)


def test_readme_quickstart_runs_alone(tmp_path: Path) -> None:
    """The README's runnable block is the self-contained quickstart and prints the task."""
    [(line, _, code)] = [block for block in python_blocks(README.read_text()) if block[1]]
    assert "units.run(create_placeholder" in code
    assert len(code.splitlines()) <= 22, f"the quickstart (line {line}) grew too long"
    script = tmp_path / "quickstart.py"
    script.write_text(code)
    assert succeeded(run([sys.executable, str(script)], cwd=tmp_path)) == "1 t0001\n"


def test_readme_stays_short() -> None:
    """The README is an introduction; the rest lives in the documentation."""
    assert len(README.read_bytes()) <= 8 * 1024


def test_readme_names_the_two_commands() -> None:
    """The README tells how to run the main example (SQLite and MySQL) and the whole suite."""
    text = README.read_text()
    assert "\nscripts/example " in text
    assert "DATABASE_URL=mysql+pymysql://" in text
    assert "scripts/example   # MySQL/MariaDB" in text
    assert "\nscripts/test " in text


def test_pages_name_only_existing_objects() -> None:
    """Every dotted `uow.` / `adapters.` name the pages mention can be imported or looked up.

    ``uow.flush()`` and the like name the unit of work an operation receives: those must
    be attributes of the SQLAlchemy unit of work.
    """
    pattern = re.compile(r"(?:`|\]\[)((?:uow|adapters)(?:\.\w+)+)")
    names = {name for page in PAGES for name in pattern.findall(page.read_text())}
    assert "adapters.sqlalchemy.create_commit_marker_table" in names
    for name in sorted(names):
        parts = name.split(".")
        package = importlib.import_module(parts[0])
        if parts[0] == "uow" and len(parts) == 2 and not hasattr(package, parts[1]):
            assert hasattr(SqlAlchemyUnitOfWork, parts[1]), f"the pages name {name}: no such thing"
            continue
        for split in range(len(parts), 0, -1):
            try:
                target: object = importlib.import_module(".".join(parts[:split]))
            except ImportError:
                continue
            for attribute in parts[split:]:
                assert hasattr(target, attribute), f"the pages name {name}, which does not exist"
                target = getattr(target, attribute)
            break
        else:
            pytest.fail(f"the pages name {name}, which does not exist")


def test_the_marker_ddl_shown_is_what_the_code_produces() -> None:
    """The SQL block of the lost-COMMIT guide is what commit_marker_ddl() returns for MySQL."""
    text = (DOCS / "guides" / "lost-commits.md").read_text()
    shown = re.search(r"```sql\n(.*?)```", text, re.DOTALL)
    assert shown is not None
    produced = ";\n".join(commit_marker_ddl(mysql.dialect())) + ";"
    assert shown.group(1).split() == produced.split()


def schedule_table(policy: RetryPolicy) -> list[str]:
    """The default schedule as the policy page shows it: the bound of each wait, per kind."""
    numbers = range(1, SCHEDULE_RETRIES + 1)
    rows = [
        "| kind | rerun | most attempts | " + " | ".join(f"wait {n}" for n in numbers) + " |",
        "| --- | --- | --- | " + " | ".join("---:" for _ in numbers) + " |",
    ]
    for kind in ErrorKind:
        cap = policy.max_attempts(kind)
        if not policy.for_kind(kind).retry:
            cells = ["no", "1", *("" for _ in numbers)]
        else:
            waits = [
                "" if cap is not None and n >= cap else f"{policy.backoff(kind, n, 1.0):g}"
                for n in numbers
            ]
            cells = ["yes", "time budget" if cap is None else str(cap), *waits]
        rows.append(f"| `{kind.value}` | " + " | ".join(cells) + " |")
    return rows


def test_the_default_schedule_table_is_the_default_policy() -> None:
    """The policy page's schedule table is computed from RetryPolicy()'s defaults."""
    text = (DOCS / "reference" / "policy.md").read_text()
    assert "\n".join(schedule_table(RetryPolicy())) in text


def test_the_errno_table_is_the_classification_table() -> None:
    """The error-kinds page lists exactly ERRNO_KINDS, each with its kind."""
    text = (DOCS / "reference" / "error-kinds.md").read_text()
    shown = {
        int(errno): ErrorKind(kind)
        for errno, kind in re.findall(r"^\| (\d+) \| `(\w+)` \|", text, re.MULTILINE)
    }
    assert shown == dict(ERRNO_KINDS)
