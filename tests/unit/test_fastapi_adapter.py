"""The FastAPI wiring on the in-memory adapter: lifespan, the Units dependency, no session."""

from __future__ import annotations

import inspect
import logging
import typing
import warnings
from typing import TYPE_CHECKING, Any

import pytest
from fastapi import BackgroundTasks, FastAPI
from sqlalchemy import create_engine
from starlette.concurrency import run_in_threadpool

from adapters.fastapi import (
    STATE_ATTRIBUTE,
    AsyncUnits,
    UnitOfWorkLifespan,
    Units,
    get_units,
    in_background,
    install_exception_handlers,
    units_lifespan,
)
from adapters.memory import AsyncInMemoryBackend, InMemoryBackend, SimulatedError
from adapters.sqlalchemy import SqlAlchemyBackend, SqlAlchemyUnitOfWork
from tests.unit.conftest import CAPPED, LOGGER, Task, TaskRepository, make_runner
from uow import AsyncRunner, ErrorKind, Runner, UnitOfWorkClosedError
from uow.testing import Fault, inject, set_testing

with warnings.catch_warnings():
    # Starlette 1.x prefers httpx2 for its TestClient; httpx still works.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


class DisposableBackend(InMemoryBackend):
    """An in-memory store that records being disposed of, as an engine's pool would be."""

    def __init__(self, events: list[str]) -> None:
        super().__init__({"tasks": TaskRepository})
        self.events = events

    def dispose(self) -> None:
        self.events.append("dispose")


class AsyncDisposableBackend(AsyncInMemoryBackend, DisposableBackend):
    """The same store for the async runner."""


class Opened:
    """A ``make_units`` that records when the lifespan called it."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.runner: Runner[Any] | None = None

    def __call__(self) -> Runner[Any]:
        self.events.append("open")
        self.runner = Runner(DisposableBackend(self.events))
        return self.runner


def add_task(uow: Any, name: str) -> Task:
    task: Task = uow.tasks.add(Task(name=name))
    return task


def make_app(opened: Opened) -> FastAPI:
    app = FastAPI(lifespan=UnitOfWorkLifespan(opened))
    received: list[object] = []
    app.state.received = received

    @app.post("/tasks")
    def create(name: str, units: Units, background: BackgroundTasks) -> dict[str, Any]:
        received.append(units)
        task = units.run(add_task, name)
        in_background(background, units.run, add_task, f"{name}-later")
        return {"id": task.id, "name": task.name}

    @app.get("/tasks")
    async def names(units: Units) -> list[str]:  # async endpoints hand the call to a thread
        tasks = await run_in_threadpool(units.run, lambda uow: uow.tasks.all())
        return [task.name for task in tasks]

    return app


def test_lifespan_builds_at_startup_and_disposes_at_shutdown() -> None:
    """Nothing is built before startup; the runner is on app.state while running, disposed after."""
    opened = Opened()
    app = make_app(opened)
    assert opened.events == []
    with TestClient(app):
        assert opened.events == ["open"]
        assert getattr(app.state, STATE_ATTRIBUTE) is opened.runner
    assert opened.events == ["open", "dispose"]
    assert not hasattr(app.state, STATE_ATTRIBUTE)


def test_endpoints_and_background_tasks_receive_the_runner() -> None:
    """The dependency gives the runner itself; the endpoint and its background task both write."""
    opened = Opened()
    app = make_app(opened)
    with TestClient(app) as client:
        created = client.post("/tasks", params={"name": "t1"}).json()
        listed = client.get("/tasks").json()
    assert created == {"id": 1, "name": "t1"}
    assert listed == ["t1", "t1-later"]  # TestClient ran the background task before returning
    assert app.state.received == [opened.runner]
    assert isinstance(opened.runner, Runner)


def test_no_session_is_exposed() -> None:
    """Units is a Runner; a unit of work kept past its operation refuses to be used."""
    runner_type, dependency = typing.get_args(Units)
    assert runner_type == Runner[Any]
    assert dependency.dependency is get_units
    # A plain dependency, not a yield one: nothing to close, whenever FastAPI would close it.
    assert not inspect.isgeneratorfunction(get_units)
    assert not inspect.isasyncgenfunction(get_units)
    assert typing.get_type_hints(get_units)["return"] == Runner[Any]

    kept: list[Any] = []
    app = FastAPI(lifespan=UnitOfWorkLifespan(Opened()))

    @app.post("/keep")
    def keep(units: Units) -> None:
        units.run(kept.append)

    with TestClient(app) as client:
        client.post("/keep")
    [uow] = kept
    assert not uow.active
    with pytest.raises(UnitOfWorkClosedError):
        _ = uow.tasks


def test_without_the_lifespan_the_dependency_says_what_is_missing() -> None:
    """An app created without the lifespan fails the request with a message naming the fix."""
    app = FastAPI()

    @app.get("/")
    def index(units: Units) -> str:
        return repr(units)

    with (
        TestClient(app) as client,
        pytest.raises(RuntimeError, match=r"units_lifespan\(make_units\)"),
    ):
        client.get("/")


def test_lifespan_entered_twice_on_one_app_is_refused() -> None:
    """Two lifespans storing runners on the same app.state would shadow each other."""
    opened = Opened()
    app = make_app(opened)
    with TestClient(app), pytest.raises(RuntimeError, match="already set"), TestClient(app):
        pass
    assert opened.events == ["open", "dispose"]


def test_make_units_must_return_a_runner() -> None:
    """A make_units returning something else fails the startup with a TypeError naming it."""
    app = FastAPI(lifespan=units_lifespan(lambda: "not a runner"))  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="not str"), TestClient(app):
        pass


def test_units_lifespan_creates_the_engine_at_startup_and_disposes_it_at_shutdown() -> None:
    """make_units runs at startup only; shutdown disposes of the engine's pool."""
    engines: list[Engine] = []

    def make_units() -> Runner[Any]:
        engines.append(create_engine("sqlite://"))  # never connects in this test
        return SqlAlchemyUnitOfWork.factory(engines[-1])

    app = FastAPI(lifespan=units_lifespan(make_units))
    assert engines == []  # no engine at import (or app creation) time
    with TestClient(app):
        [engine] = engines
        backend = getattr(app.state, STATE_ATTRIBUTE).backend
        assert isinstance(backend, SqlAlchemyBackend)
        assert backend.engine is engine
        pool = engine.pool
    assert engine.pool is not pool  # dispose() replaced the pool, closing its connections
    assert len(engines) == 1


def test_tests_can_override_the_runner_and_nothing_is_built() -> None:
    """dependency_overrides[get_units] swaps the runner; the lifespan then builds nothing."""
    fake = make_runner()
    opened = Opened()
    app = FastAPI(lifespan=units_lifespan(opened))

    @app.post("/tasks")
    def create(name: str, units: Units) -> int:
        return units.run(add_task, name).id or 0

    app.dependency_overrides[get_units] = lambda: fake
    with TestClient(app) as client:
        assert client.post("/tasks", params={"name": "t1"}).json() == 1
    assert opened.events == []
    assert [task.name for task in fake.run(lambda uow: uow.tasks.all())] == ["t1"]


def test_async_endpoints_get_the_async_runner() -> None:
    """AsyncUnits gives an async def endpoint the AsyncRunner the lifespan built."""
    events: list[str] = []
    app = FastAPI(lifespan=units_lifespan(lambda: AsyncRunner(AsyncDisposableBackend(events))))

    @app.post("/tasks")
    async def create(name: str, units: AsyncUnits) -> str:
        return (await units.run(add_task, name)).name  # type: ignore[arg-type]  # plain functions run too; run() is typed for awaitables

    with TestClient(app) as client:
        assert client.post("/tasks", params={"name": "a1"}).json() == "a1"
    assert events == ["dispose"]


def test_background_failure_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    """A background job that gives up is logged at ERROR with its details; the app goes on."""
    caplog.set_level(logging.ERROR, logger=LOGGER)
    runner = make_runner(CAPPED.override(attempts=2))
    app = FastAPI()

    @app.post("/later")
    def later(units: Units, background: BackgroundTasks) -> str:
        in_background(background, units.run, add_task, "never")
        return "accepted"

    app.dependency_overrides[get_units] = lambda: runner
    with set_testing(True), inject(Fault.disconnect(at=1, times=2)), TestClient(app) as client:
        assert client.post("/later").json() == "accepted"
        assert client.post("/later").status_code == 200  # the connection still serves
    (record,) = [r for r in caplog.records if "background task" in r.getMessage()]
    assert "run failed: SimulatedError (attempts exhausted)" in record.getMessage()
    assert record.uow_attempt == 2  # type: ignore[attr-defined]


def error_app(runner: Runner[Any]) -> TestClient:
    app = FastAPI()
    install_exception_handlers(app, errors=(SimulatedError,))

    @app.post("/tasks")
    def create(units: Units) -> str:
        return units.run(add_task, "t").name

    app.dependency_overrides[get_units] = lambda: runner
    return TestClient(app, raise_server_exceptions=False)


def test_give_up_on_a_transient_error_answers_503_with_retry_after() -> None:
    """An operation that gave up on a lost connection answers 503 and Retry-After (its budget)."""
    with (
        set_testing(True),
        inject(Fault.disconnect(at=1, times=2)),
        error_app(make_runner(CAPPED.override(attempts=2))) as client,
    ):
        response = client.post("/tasks")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    assert response.json() == {
        "error": "database_unavailable",
        "kind": "disconnect",
        "reason": "attempts exhausted",
    }


def test_lost_commit_answers_500_naming_the_operation() -> None:
    """CommitOutcomeUnknown answers 500 telling the client to check before repeating."""
    with (
        set_testing(True),
        inject(Fault.lost_commit(committed=True)),
        error_app(make_runner()) as client,
    ):
        response = client.post("/tasks")
    assert response.status_code == 500
    assert response.json()["error"] == "commit_outcome_unknown"
    assert response.json()["operation"] == "add_task"


def test_an_error_that_is_not_retried_is_left_to_fastapi() -> None:
    """A permanent error is not turned into a 503: FastAPI's own handling answers."""
    with (
        set_testing(True),
        inject(Fault(ErrorKind.PERMANENT, 1062)),
        error_app(make_runner()) as client,
    ):
        response = client.post("/tasks")
    assert response.status_code == 500
    assert "database_unavailable" not in response.text
