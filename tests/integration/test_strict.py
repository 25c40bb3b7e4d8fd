"""Strict mode, the migration tool: every statement that bypasses the unit of work fails.

The core rules run on SQLite; the library's own statements (first-connect setup, server
facts, commit-marker lookups with their settling, pruning) on the real MariaDB. Then
the examples: with strict mode on, the FastAPI, Flask and worker examples run as they
are (no direct use left, except the FastAPI example's deliberately kept old pattern),
and a direct use added in a test-local route fails naming its own line.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from adapters import pytest_plugin
from adapters.fastapi import Units  # noqa: TC001 -- FastAPI reads route annotations at run time
from adapters.sqlalchemy import (
    MARKER_TABLE,
    SqlAlchemyBackend,
    SqlAlchemyUnitOfWork,
    StrictModeError,
    _strict,
    create_commit_marker_table,
    create_engine,
    strict,
)
from tests.integration.helpers import CONNECT_ARGS
from uow import RetryPolicy, UnitOfWorkError
from uow.testing import Fault, inject, set_testing

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

if TYPE_CHECKING:
    from collections.abc import Iterator

    from flask import Flask
    from sqlalchemy.engine import Engine

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve()


def line_of(mark: str) -> int:
    """The line of this file that carries the comment ``# <mark>``."""
    lines = HERE.read_text().splitlines()
    [number] = [i for i, line in enumerate(lines, 1) if line.rstrip().endswith(f"# {mark}")]
    return number


def assert_names(error: StrictModeError, mark: str, function: str) -> None:
    """The error points at the marked line of this file, in ``function``."""
    assert (Path(error.filename).name, error.lineno) == (HERE.name, line_of(mark))
    assert error.function == function
    assert f"{HERE.name}:{line_of(mark)} in {function}()" in str(error)


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("RETRYING_UOW_", "DATABASE_", "IMPORT_"))
    }
    return {**env, **extra}


def run(args: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 -- our own interpreter and files
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path}/strict.db")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    yield engine
    engine.dispose()


@pytest.fixture
def units(engine: Engine) -> Any:
    return SqlAlchemyUnitOfWork.factory(engine)  # from here on, the engine is watched


def add_note(uow: SqlAlchemyUnitOfWork, body: str) -> None:
    uow.session.execute(text("INSERT INTO notes (body) VALUES (:body)"), {"body": body})


def notes(engine: Engine) -> list[str]:
    with strict(engine, enabled=False), engine.connect() as connection:
        return list(connection.scalars(text("SELECT body FROM notes ORDER BY id")))


# --- The rules ----------------------------------------------------------------------------


@pytest.mark.usefixtures("units")
def test_off_by_default(engine: Engine) -> None:
    """Without strict mode, direct uses of a watched engine run as always."""
    assert _strict.active is False
    with Session(engine) as session:
        session.execute(text("INSERT INTO notes (body) VALUES ('direct')"))
        session.commit()
    assert notes(engine) == ["direct"]


@pytest.mark.usefixtures("units")
def test_a_statement_outside_any_unit_of_work_names_its_call_site(engine: Engine) -> None:
    """Session(engine).execute(...) outside operations raises, naming file:line and function."""
    with strict(), pytest.raises(StrictModeError) as caught:
        Session(engine).execute(text("SELECT 1"))  # outside
    error = caught.value
    assert isinstance(error, UnitOfWorkError)
    assert_names(error, "outside", "test_a_statement_outside_any_unit_of_work_names_its_call_site")
    assert "outside any unit of work" in str(error)
    assert "'SELECT 1'" in str(error)
    assert error.operation is None


def test_a_statement_on_another_connection_inside_an_operation_is_refused(
    engine: Engine, units: Any
) -> None:
    """Inside an operation, a connection of one's own fails; the operation commits nothing."""

    def also_direct(uow: SqlAlchemyUnitOfWork) -> None:
        add_note(uow, "through the unit of work")
        with engine.connect() as connection:
            connection.execute(text("INSERT INTO notes (body) VALUES ('direct')"))  # inside

    with strict(), pytest.raises(StrictModeError) as caught:
        units.run(also_direct)
    assert_names(caught.value, "inside", "also_direct")
    assert caught.value.operation is not None
    assert caught.value.operation.endswith("also_direct")
    assert "on a connection other than the operation's" in str(caught.value)
    assert notes(engine) == []


def test_every_way_of_using_the_unit_of_work_passes(engine: Engine) -> None:
    """Reads, writes, flush, savepoints, nesting, the block form, markers, isolation levels."""
    create_commit_marker_table(engine)
    units = SqlAlchemyUnitOfWork.factory(engine, commit_markers=True)

    def everything(uow: SqlAlchemyUnitOfWork) -> int:
        add_note(uow, "one")
        uow.flush()
        with uow.session.begin_nested():
            add_note(uow, "two")
        units.run(add_note, "nested")  # joins the running unit of work
        return int(uow.session.scalar(text("SELECT COUNT(*) FROM notes")) or 0)

    with strict():
        assert units.run(everything) == 3
        for attempt in units.attempts("block"):
            with attempt as uow:
                add_note(uow, "block")
        serial = units.using(isolation_level="SERIALIZABLE")
        assert serial.run(lambda uow: uow.session.scalar(text("SELECT 1"))) == 1
    assert notes(engine) == ["one", "two", "nested", "block"]


def test_a_lost_commit_resolved_by_its_marker_passes(engine: Engine) -> None:
    """The marker lookup after a lost COMMIT runs on a connection of the library's own."""
    create_commit_marker_table(engine)
    units = SqlAlchemyUnitOfWork.factory(engine, commit_markers=True)
    with strict(), set_testing(True), inject(Fault.lost_commit(committed=True)) as injection:
        units.run(add_note, "once")
    assert injection.fired
    assert notes(engine) == ["once"]


def test_engines_without_a_backend_are_never_checked(tmp_path: Path) -> None:
    """Strict mode watches only the engines a backend was built on."""
    plain = sa.create_engine(f"sqlite:///{tmp_path}/plain.db")
    with strict(), plain.connect() as connection:
        assert connection.scalar(text("SELECT 1")) == 1
    plain.dispose()


@pytest.mark.usefixtures("units")
def test_one_engine_or_every_engine_restored_after_the_block(
    engine: Engine, tmp_path: Path
) -> None:
    """strict(engine) scopes to one engine; an engine's own setting wins; blocks restore."""
    other = create_engine(f"sqlite:///{tmp_path}/other.db")
    SqlAlchemyUnitOfWork.factory(other)

    def direct(on: Engine) -> None:
        with on.connect() as connection:
            connection.execute(text("SELECT 1"))

    with strict(engine):
        direct(other)
        with pytest.raises(StrictModeError):
            direct(engine)
    direct(engine)
    with strict(), strict(other, enabled=False):
        direct(other)
        with pytest.raises(StrictModeError):
            direct(engine)
    strict(engine)  # without a block: on until switched off
    try:
        with pytest.raises(StrictModeError):
            direct(engine)
    finally:
        strict(engine, enabled=False)
    direct(engine)
    assert _strict.active is False
    other.dispose()


def test_the_environment_variable_is_read_when_a_backend_is_built(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RETRYING_UOW_STRICT=1 at build time: that engine is strict; strict(enabled=False) wins."""
    before = create_engine(f"sqlite:///{tmp_path}/before.db")
    SqlAlchemyUnitOfWork.factory(before)
    monkeypatch.setenv("RETRYING_UOW_STRICT", "1")
    SqlAlchemyUnitOfWork.factory(engine)
    try:
        with before.connect() as connection:
            connection.execute(text("SELECT 1"))
        with pytest.raises(StrictModeError), engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        with strict(enabled=False), engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        monkeypatch.setenv("RETRYING_UOW_STRICT", "off")
        SqlAlchemyUnitOfWork.factory(engine)
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        monkeypatch.setenv("RETRYING_UOW_STRICT", "maybe")
        with pytest.raises(ValueError, match=r"RETRYING_UOW_STRICT='maybe': expected 1"):
            SqlAlchemyUnitOfWork.factory(engine)
    finally:
        _strict._from_env.discard(engine.dialect)
        _strict._update()
        before.dispose()


def test_the_environment_variable_is_no_policy_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """RetryPolicy.from_env() accepts RETRYING_UOW_STRICT; a misspelling stays an error."""
    monkeypatch.setenv("RETRYING_UOW_STRICT", "1")
    assert RetryPolicy.from_env() == RetryPolicy()
    monkeypatch.setenv("RETRYING_UOW_STRICTLY", "1")
    with pytest.raises(ValidationError, match="RETRYING_UOW_STRICTLY"):
        RetryPolicy.from_env()


PLUGIN_TEST = """
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from adapters.sqlalchemy import SqlAlchemyUnitOfWork


def test_direct_use(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path}/t.db")
    units = SqlAlchemyUnitOfWork.factory(engine)
    assert units.run(lambda uow: uow.session.scalar(text("SELECT 1"))) == 1
    Session(engine).execute(text("SELECT 2"))
"""


@pytest.mark.parametrize(
    ("args", "ini", "fails"),
    [
        ([], "", False),
        (["--uow-strict"], "", True),
        ([], "uow_strict = true", True),
    ],
    ids=["off", "option", "ini"],
)
def test_the_pytest_plugin_turns_strict_mode_on(
    tmp_path: Path, args: list[str], ini: str, fails: bool
) -> None:
    """pytest --uow-strict (or uow_strict = true) fails a test's direct use, naming its line."""
    (tmp_path / "test_app.py").write_text(textwrap.dedent(PLUGIN_TEST))
    (tmp_path / "pytest.ini").write_text(f"[pytest]\n{ini}\n")
    result = run(["-m", "pytest", "-q", "-p", "no:cacheprovider", *args], clean_env(), tmp_path)
    if fails:
        assert result.returncode == 1, result.stdout
        assert "StrictModeError: strict mode: a statement ran outside any unit of work" in (
            result.stdout
        )
        assert "at test_app.py:12 in test_direct_use()" in result.stdout
    else:
        assert result.returncode == 0, result.stdout
    assert pytest_plugin.__name__ == "adapters.pytest_plugin"


# --- The library's own statements on MariaDB ---------------------------------------------


@pytest.mark.integration
def test_the_librarys_own_statements_on_mariadb_pass(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """First-connect setup, server facts, marker lookup (with settling) and pruning pass."""
    checked: list[str] = []
    check = _strict.check

    def spy(context: Any, statement: str) -> None:
        checked.append(statement)
        check(context, statement)

    monkeypatch.setattr(_strict, "check", spy)
    engine = create_engine(database_url, connect_args=CONNECT_ARGS)  # never connected yet
    try:
        units = SqlAlchemyUnitOfWork.factory(engine, commit_markers=True)
        with strict():
            # The first connection: SQLAlchemy initialises the dialect on it.
            assert units.run(lambda uow: uow.session.scalar(text("SELECT 1"))) == 1
            create_commit_marker_table(engine)

            def write(uow: SqlAlchemyUnitOfWork) -> None:
                uow.session.execute(
                    text(f"INSERT INTO {MARKER_TABLE} VALUES (:t, NOW())"), {"t": uuid.uuid4().hex}
                )

            # Not idempotent, no verify: only the marker lookup can resolve the lost COMMIT.
            with set_testing(True), inject(Fault.lost_commit(committed=True)) as injection:
                units.run(write)
            assert injection.fired
            units.run(write)  # committed: old markers are pruned
            monkeypatch.undo()  # the spy would be the call site
            with pytest.raises(StrictModeError) as caught, Session(engine) as session:
                session.execute(select(1))  # mariadb
        function = "test_the_librarys_own_statements_on_mariadb_pass"
        assert_names(caught.value, "mariadb", function)
        assert "app:***@" in str(caught.value)
        let_through = " ".join(checked).lower()
        for statement in ("sql_mode", "uptime", "innodb_lock_wait_timeout", "delete from"):
            assert statement in let_through  # first connect, settling, pruning
    finally:
        engine.dispose()


@pytest.mark.integration
def test_a_direct_use_in_async_code_names_the_coroutines_line(database_url: str) -> None:
    """Through SQLAlchemy's greenlet bridge too, the call site is the awaiting coroutine."""
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine  # noqa: PLC0415

    from adapters.sqlalchemy import AsyncSqlAlchemyUnitOfWork  # noqa: PLC0415

    async def scenario() -> StrictModeError:
        engine = create_async_engine(database_url.replace("+pymysql", "+aiomysql"))
        try:
            units = AsyncSqlAlchemyUnitOfWork.factory(engine)
            with strict(engine):
                answer = await units.run(lambda uow: uow.session.scalar(text("SELECT 1")))
                assert answer == 1
                async with AsyncSession(engine) as session:
                    try:
                        await session.execute(text("SELECT 1"))  # async
                    except StrictModeError as error:
                        return error
            raise AssertionError("not refused")
        finally:
            await engine.dispose()

    error = asyncio.run(scenario())
    assert_names(error, "async", "scenario")


# --- The examples ---------------------------------------------------------------------------


def fastapi_settings(url: str, **engine_options: Any) -> Any:
    from examples.fastapi_app.app import Settings  # noqa: PLC0415

    return Settings(database_url=url, download_seconds=0.0, engine_options=engine_options)


def check_fastapi_example(url: str, **engine_options: Any) -> None:
    from examples.fastapi_app.app import create_app  # noqa: PLC0415

    with strict(), TestClient(create_app(fastapi_settings(url, **engine_options))) as client:
        accepted = client.post("/imports", json={"source": "strict"})
        assert accepted.status_code == 202
        found = client.get(f"/imports/{accepted.json()['id']}").json()
        assert found["status"] == "done"
        assert [i["id"] for i in client.get("/imports", params={"source": "strict"}).json()] == [
            accepted.json()["id"]
        ]


def test_fastapi_example_runs_in_strict_mode(tmp_path: Path) -> None:
    """Its routes and background task run every statement in operations."""
    check_fastapi_example(f"sqlite:///{tmp_path}/imports.db")


@pytest.mark.integration
def test_fastapi_example_runs_in_strict_mode_on_mariadb(database_url: str) -> None:
    """The same on MariaDB."""
    check_fastapi_example(database_url, connect_args=CONNECT_ARGS)


def test_fastapi_examples_old_pattern_is_what_strict_mode_finds(tmp_path: Path) -> None:
    """The route kept to show the incident (Depends(get_db)) is a direct use: refused."""
    from examples.fastapi_app.app import create_app  # noqa: PLC0415

    app = create_app(fastapi_settings(f"sqlite:///{tmp_path}/imports.db"))
    with strict(), TestClient(app) as client, pytest.raises(StrictModeError) as caught:
        client.post("/imports/old-pattern", json={"source": "old"})
    assert caught.value.filename.endswith(str(Path("examples", "fastapi_app", "app.py")))
    assert caught.value.function == "start_import_old_pattern"


def test_a_direct_use_in_a_fastapi_route_names_its_line(tmp_path: Path) -> None:
    """A test-local route doing Session(engine).execute(...) fails at its own line."""
    from examples.fastapi_app.app import create_app  # noqa: PLC0415

    app = create_app(fastapi_settings(f"sqlite:///{tmp_path}/imports.db"))

    @app.get("/direct")
    def direct_route(units: Units) -> int:
        backend = units.backend
        assert isinstance(backend, SqlAlchemyBackend)
        return int(Session(backend.engine).execute(text("SELECT 1")).scalar_one())  # fastapi

    with strict(), TestClient(app) as client, pytest.raises(StrictModeError) as caught:
        client.get("/direct")
    assert_names(caught.value, "fastapi", "direct_route")


def flask_app(url: str, **engine_options: Any) -> Flask:
    from examples.flask_app.app import create_app  # noqa: PLC0415

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SQLALCHEMY_ENGINE_OPTIONS": engine_options})
    app.config["TESTING"] = True
    return app


def check_flask_example(url: str, **engine_options: Any) -> None:
    app = flask_app(url, **engine_options)
    client = app.test_client()
    with strict():
        assert client.post("/stock/tea", json={"quantity": 2}).status_code == 200
        order = client.post("/orders", json={"sku": "tea", "quantity": 2})
        assert order.status_code == 201
        assert order.json is not None
        assert client.post("/orders", json={"sku": "tea", "quantity": 1}).status_code == 409
        assert client.get(f"/orders/{order.json['id']}").json == order.json
        assert client.get("/stock/tea").json == {"sku": "tea", "quantity": 0}


def test_flask_example_runs_in_strict_mode(tmp_path: Path) -> None:
    """Every request's statements run in operations."""
    check_flask_example(f"sqlite:///{tmp_path}/shop.db")


@pytest.mark.integration
def test_flask_example_runs_in_strict_mode_on_mariadb(database_url: str) -> None:
    """The same on MariaDB."""
    check_flask_example(database_url, connect_args=CONNECT_ARGS)


@pytest.mark.integration
def test_flask_examples_test_suite_passes_with_uow_strict() -> None:
    """pytest --uow-strict on the Flask example's tests: no direct use left."""
    options = ["-q", "-p", "no:cacheprovider", "--uow-strict"]
    result = run(["-m", "pytest", *options, "tests/e2e/test_flask_example.py"], clean_env())
    assert result.returncode == 0, result.stdout + result.stderr


def test_direct_uses_in_a_flask_route_name_their_lines(tmp_path: Path) -> None:
    """A test-local route with Session(engine), or db.session outside operations, fails."""
    from examples.flask_app.app import Order, db  # noqa: PLC0415

    app = flask_app(f"sqlite:///{tmp_path}/shop.db")

    @app.get("/direct")
    def direct_route() -> dict[str, int]:
        return {"one": Session(db.engine).execute(text("SELECT 1")).scalar_one()}  # flask

    @app.get("/db-session")
    def db_session_route() -> dict[str, int]:
        return {"orders": len(db.session.scalars(select(Order)).all())}  # db.session

    client = app.test_client()
    with strict(), pytest.raises(StrictModeError) as caught:
        client.get("/direct")
    assert_names(caught.value, "flask", "direct_route")
    with strict(), pytest.raises(StrictModeError) as caught:
        client.get("/db-session")
    assert_names(caught.value, "db.session", "db_session_route")


def run_worker(url: str | None) -> str:
    env = clean_env(RETRYING_UOW_STRICT="1", **({"DATABASE_URL": url} if url else {}))
    result = run(["examples/worker.py"], env)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return result.stdout


def test_worker_example_runs_with_retrying_uow_strict() -> None:
    """Threads, forked children and layered retries: every statement in an operation."""
    out = run_worker(None)
    assert "StrictModeError" not in out
    assert out.rstrip().endswith("OK")


@pytest.mark.integration
def test_worker_example_runs_with_retrying_uow_strict_on_mariadb(database_url: str) -> None:
    """The same on MariaDB."""
    assert run_worker(database_url).rstrip().endswith("OK")


def test_a_direct_use_next_to_the_worker_names_its_line(tmp_path: Path) -> None:
    """The worker's own functions pass; a Session of one's own on its engine fails."""
    from examples.worker import Base, Job, Jobs, enqueue, handle, statuses  # noqa: PLC0415

    engine = create_engine(f"sqlite:///{tmp_path}/jobs.db")
    Base.metadata.create_all(engine)
    runner = Jobs.factory(engine)
    with strict():
        [job_id] = runner.run(enqueue, ["strict-1"])
        handle(runner, job_id, "worker-1")
        assert runner.run(statuses, "strict-") == {"done": 1}

        def peek() -> list[Job]:
            return list(Session(engine).scalars(select(Job)))  # worker

        with pytest.raises(StrictModeError) as caught:
            peek()
    assert_names(caught.value, "worker", "peek")
    engine.dispose()


def test_nothing_is_left_switched_on() -> None:
    """Every test above restored strict mode."""
    assert _strict.active is False
    assert _strict._everywhere is None
