"""The SQLModel example: ``uow.session.exec(...)`` typed and working, on SQLite and MariaDB.

``examples/sqlmodel_app.py`` runs as a user would (its own checks, exit 0), and
type-checks under ``mypy --strict``; the session class reaches each attempt either
from the unit of work's parameter or from ``factory(..., session_class=...)``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlmodel
from sqlalchemy import create_engine
from sqlmodel import SQLModel, select

from adapters.sqlalchemy import SqlAlchemyUnitOfWork
from examples.sqlmodel_app import Guild, Hero, recruit, roster
from uow import TransactionControlError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import Engine

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = "examples/sqlmodel_app.py"


def run(args: list[str], **env: str) -> str:
    """Run with this interpreter from the checkout; return stdout of a run that exited 0."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RETRYING_UOW_", "DATABASE"))}
    result = subprocess.run(  # noqa: S603 -- our own interpreter and files
        [sys.executable, *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path}/guild.db")
    SQLModel.metadata.create_all(engine)
    yield engine
    engine.dispose()


def test_example_runs_on_sqlite() -> None:
    """Heroes recruited, one of them after a lost connection, each once."""
    out = run([EXAMPLE])
    assert "recruited Rusty-Man after a lost connection; reruns: ['disconnect']" in out
    assert "['Deadpond', 'Rusty-Man']; heroes in all: 2" in out
    assert out.rstrip().endswith("OK")


@pytest.mark.integration
def test_example_runs_on_mariadb(database_url: str) -> None:
    """The same on MariaDB: the rerun happens on a fresh connection."""
    out = run([EXAMPLE], DATABASE_URL=database_url)
    assert "SQLModel on mysql+pymysql://app:***@" in out
    assert "reruns: ['disconnect']" in out
    assert out.rstrip().endswith("OK")


def test_example_type_checks_under_mypy_strict() -> None:
    """uow.session is a sqlmodel.Session to mypy: exec() results are typed."""
    out = run(["-m", "mypy", "--strict", EXAMPLE])
    assert "Success: no issues found in 1 source file" in out


def test_the_unit_of_work_parameter_makes_sqlmodel_sessions(engine: Engine) -> None:
    """SqlAlchemyUnitOfWork[sqlmodel.Session]: each attempt's session is SQLModel's."""
    assert Guild.session_class() is sqlmodel.Session
    units = Guild.factory(engine)
    units.run(recruit, "Tarantula", "spiders")
    assert units.run(lambda uow: isinstance(uow.session, sqlmodel.Session))
    assert units.run(roster, "spiders") == ["Tarantula"]


def test_session_class_option_makes_sqlmodel_sessions(engine: Engine) -> None:
    """factory(..., session_class=sqlmodel.Session) without a subclass: exec() works."""
    assert SqlAlchemyUnitOfWork.session_class() is not sqlmodel.Session
    units = SqlAlchemyUnitOfWork.factory(engine, session_class=sqlmodel.Session)
    Guild.factory(engine).run(recruit, "Black Lion", "lions")

    def names(uow: SqlAlchemyUnitOfWork) -> list[str]:
        session = uow.session
        assert isinstance(session, sqlmodel.Session)
        return [hero.name for hero in session.exec(select(Hero)).all()]

    assert units.run(names) == ["Black Lion"]


def test_a_sqlmodel_session_still_leaves_the_commit_to_the_runner(engine: Engine) -> None:
    """The attempt's SQLModel session refuses commit() like any attempt's session."""

    def commit_early(uow: Guild) -> None:
        uow.session.add(Hero(name="Dormammu", team_id=1))
        uow.session.commit()

    with pytest.raises(TransactionControlError, match=r"Session\.commit\(\)"):
        Guild.factory(engine).run(commit_early)
