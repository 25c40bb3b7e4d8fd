"""The FastAPI wiring on the in-memory adapter: lifespan, the Units dependency, no session."""

from __future__ import annotations

import contextlib
import inspect
import typing
import warnings
from typing import TYPE_CHECKING, Any

import pytest
from fastapi import BackgroundTasks, FastAPI
from sqlalchemy import create_engine
from starlette.concurrency import run_in_threadpool

from adapters.fastapi import (
    STATE_ATTRIBUTE,
    UnitOfWorkLifespan,
    Units,
    get_units,
    units_lifespan,
)
from adapters.memory import InMemoryUnitOfWork
from adapters.sqlalchemy import SqlAlchemyBackend
from tests.unit.conftest import Task, TaskRepository
from uow import Runner, UnitOfWorkClosedError

with warnings.catch_warnings():
    # Starlette 1.x prefers httpx2 for its TestClient; httpx still works.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import Engine


class Opened:
    """Records what a lifespan's ``open_units`` did, and when."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.runner: Runner[Any] | None = None

    @contextlib.contextmanager
    def __call__(self) -> Iterator[Runner[Any]]:
        self.runner = InMemoryUnitOfWork.factory(repositories={"tasks": TaskRepository})
        self.events.append("open")
        try:
            yield self.runner
        finally:
            self.events.append("close")


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
        background.add_task(units.run, add_task, f"{name}-later")
        return {"id": task.id, "name": task.name}

    @app.get("/tasks")
    async def names(units: Units) -> list[str]:  # async endpoints hand the call to a thread
        tasks = await run_in_threadpool(units.run, lambda uow: uow.tasks.all())
        return [task.name for task in tasks]

    return app


def test_lifespan_opens_at_startup_and_closes_at_shutdown() -> None:
    """Nothing opens before startup; the runner is on app.state while running, gone after."""
    opened = Opened()
    app = make_app(opened)
    assert opened.events == []
    with TestClient(app):
        assert opened.events == ["open"]
        assert getattr(app.state, STATE_ATTRIBUTE) is opened.runner
    assert opened.events == ["open", "close"]
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

    with TestClient(app) as client, pytest.raises(RuntimeError, match=r"units_lifespan\(\.\.\.\)"):
        client.get("/")


def test_lifespan_entered_twice_on_one_app_is_refused() -> None:
    """Two lifespans storing runners on the same app.state would shadow each other."""
    opened = Opened()
    app = make_app(opened)
    with TestClient(app), pytest.raises(RuntimeError, match="already set"), TestClient(app):
        pass
    assert opened.events == ["open", "close"]


def test_units_lifespan_creates_the_engine_at_startup_and_disposes_it_at_shutdown() -> None:
    """The engine factory runs at startup only; shutdown disposes of the engine's pool."""
    engines: list[Engine] = []

    def make_engine() -> Engine:
        engines.append(create_engine("sqlite://"))  # never connects in this test
        return engines[-1]

    app = FastAPI(lifespan=units_lifespan(make_engine))
    assert engines == []  # no engine at import (or app creation) time
    with TestClient(app):
        [engine] = engines
        backend = getattr(app.state, STATE_ATTRIBUTE).backend
        assert isinstance(backend, SqlAlchemyBackend)
        assert backend.engine is engine
        pool = engine.pool
    assert engine.pool is not pool  # dispose() replaced the pool, closing its connections
    assert len(engines) == 1


def test_tests_can_override_the_runner_with_an_in_memory_one() -> None:
    """dependency_overrides[get_units] swaps the runner, as FastAPI overrides any dependency."""
    fake = InMemoryUnitOfWork.factory(repositories={"tasks": TaskRepository})
    app = FastAPI()  # no lifespan needed when the dependency is overridden

    @app.post("/tasks")
    def create(name: str, units: Units) -> int:
        return units.run(add_task, name).id or 0

    app.dependency_overrides[get_units] = lambda: fake
    with TestClient(app) as client:
        assert client.post("/tasks", params={"name": "t1"}).json() == 1
    assert [task.name for task in fake.run(lambda uow: uow.tasks.all())] == ["t1"]
