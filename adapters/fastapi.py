"""FastAPI integration: endpoints get the runner, never a session.

The seed incident starts with ``Depends(get_db)``: the request's Session is handed to a
background task that downloads for half an hour and then commits on it. Here an
endpoint receives the :class:`~uow.Runner` instead, which holds no session and no
connection between operations; each write, in the endpoint or in the background task,
is one short unit of work::

    from adapters.fastapi import Units, units_lifespan

    def make_engine() -> Engine:              # runs at startup: no engine at import time
        return create_engine(os.environ["DATABASE_URL"])

    app = FastAPI(lifespan=units_lifespan(make_engine, repositories={"tasks": TaskRepository}))

    @app.post("/imports")
    def start_import(source: str, units: Units, background: BackgroundTasks) -> dict[str, int]:
        task = units.run(create_placeholder, source)         # committed before the response
        background.add_task(download_and_record, units, task.id, source)
        return {"id": task.id}

The lifespan creates the engine when the application starts, keeps the runner on
``app.state.units`` and disposes of the engine when the application stops. Annotate
with your own unit-of-work protocol for typed operations:
``Annotated[Runner[TasksUnitOfWork], Depends(get_units)]``.

Why this is right on every FastAPI version: a ``yield`` dependency's exit code (the
``session.close()`` of ``get_db``) has run at different moments. Before 0.106 it ran
after the background tasks; from 0.106 to 0.117 before them, right after the response
was sent; from 0.118 on after them again. So a session dependency is either closed
under a background task that still uses it, or kept open, with its pooled connection
checked out, for as long as the task runs. :func:`get_units` is a plain dependency, not
a ``yield`` one, and what it returns holds nothing that needs closing: there is no exit
code whose timing could matter.

``Runner.run`` blocks while its operation talks to the database: call it from ``def``
endpoints and background tasks (FastAPI runs them in its thread pool), or from an
``async def`` endpoint through ``await run_in_threadpool(units.run, fn, ...)``.
"""

# No "from __future__ import annotations": FastAPI reads these signatures at run time.

from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from typing import Annotated, Any

from fastapi import Depends
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from adapters.sqlalchemy import Classifier, RepositoryFactory, SqlAlchemyUnitOfWork
from uow import EventHandlers, RetryHook, RetryPolicy, Runner

__all__ = [
    "STATE_ATTRIBUTE",
    "UnitOfWorkLifespan",
    "Units",
    "get_units",
    "units_lifespan",
]

STATE_ATTRIBUTE = "units"
"""Attribute of ``app.state`` that holds the runner while the application runs."""


def get_units(connection: HTTPConnection) -> Runner[Any]:
    """Return the application's runner: the dependency behind :data:`Units`.

    A plain dependency, not a ``yield`` one: the runner holds no session and no
    connection, so nothing is left to close when the request (or its background
    tasks) ends, whichever FastAPI version decides when that is.
    """
    units = getattr(connection.app.state, STATE_ATTRIBUTE, None)
    if not isinstance(units, Runner):
        msg = (
            f"no runner on app.state.{STATE_ATTRIBUTE}: create the application with "
            "FastAPI(lifespan=units_lifespan(...)) and let it start (with TestClient: "
            "`with TestClient(app) as client:`)"
        )
        raise RuntimeError(msg)  # noqa: TRY004 -- a wiring mistake, not a bad argument
    return units


Units = Annotated[Runner[Any], Depends(get_units)]
"""An endpoint parameter that receives the application's runner: ``units: Units``."""


class UnitOfWorkLifespan:
    """A FastAPI lifespan that opens a runner at startup and closes its resources at shutdown.

    ``open_units`` returns a context manager giving the runner; it is entered when the
    application starts and exited when it stops, both in a worker thread (creating
    tables or closing pooled connections blocks). The runner lives on
    ``app.state.units`` in between. :func:`units_lifespan` builds one for SQLAlchemy; give
    your own for another backend, e.g. the in-memory adapter in tests::

        UnitOfWorkLifespan(lambda: contextlib.nullcontext(InMemoryUnitOfWork.factory()))

    To combine it with a lifespan of your own, enter it there:
    ``async with lifespan(app): ...``.
    """

    def __init__(self, open_units: Callable[[], AbstractContextManager[Runner[Any]]]) -> None:
        """Keep the recipe; nothing is opened before the application starts."""
        self._open_units = open_units

    def __call__(self, app: Starlette) -> AbstractAsyncContextManager[None]:
        """Return the context manager FastAPI enters at startup and exits at shutdown."""
        return self._run(app)

    @asynccontextmanager
    async def _run(self, app: Starlette) -> AsyncIterator[None]:
        if getattr(app.state, STATE_ATTRIBUTE, None) is not None:
            msg = f"app.state.{STATE_ATTRIBUTE} is already set: is the lifespan entered twice?"
            raise RuntimeError(msg)
        opened = self._open_units()
        units = await run_in_threadpool(opened.__enter__)
        setattr(app.state, STATE_ATTRIBUTE, units)
        try:
            yield
        finally:
            delattr(app.state, STATE_ATTRIBUTE)
            await run_in_threadpool(opened.__exit__, None, None, None)

    def __repr__(self) -> str:
        return f"UnitOfWorkLifespan({self._open_units!r})"


def units_lifespan(
    engine_factory: Callable[[], Engine],
    *,
    repositories: Mapping[str, RepositoryFactory] | None = None,
    policy: RetryPolicy | None = None,
    hooks: Sequence[RetryHook] = (),
    classifier: Classifier | None = None,
    commit_markers: bool = False,
    event_handlers: EventHandlers | None = None,
) -> UnitOfWorkLifespan:
    """Return a lifespan that creates the engine at startup and disposes of it at shutdown.

    ``engine_factory`` is called once, when the application starts (a good place to
    create tables in a demo, or to check the schema); the other arguments are those of
    :meth:`SqlAlchemyUnitOfWork.factory <adapters.sqlalchemy.SqlAlchemyUnitOfWork.factory>`.
    """

    @contextmanager
    def open_units() -> Iterator[Runner[Any]]:
        engine = engine_factory()
        try:
            yield SqlAlchemyUnitOfWork.factory(
                engine,
                repositories=repositories,
                policy=policy,
                hooks=hooks,
                classifier=classifier,
                commit_markers=commit_markers,
                event_handlers=event_handlers,
            )
        finally:
            engine.dispose()

    return UnitOfWorkLifespan(open_units)
