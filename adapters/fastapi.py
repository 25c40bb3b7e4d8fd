"""FastAPI integration: endpoints get the runner, never a session.

The seed incident starts with ``Depends(get_db)``: the request's Session is handed to a
background task that downloads for half an hour and then commits on it. Here an
endpoint receives the runner instead, which holds no session and no connection
between operations; each write, in the endpoint or in the background task, is one
short unit of work:

    def make_units() -> Runner[Imports]:       # runs at startup: no engine at import time
        return Imports.factory(create_engine(os.environ["DATABASE_URL"]))

    app = FastAPI(lifespan=units_lifespan(make_units))
    install_exception_handlers(app)

    @app.post("/imports")
    def start_import(source: str, units: Units, background: BackgroundTasks) -> dict[str, int]:
        task = units.run(create_placeholder, source)           # committed before the response
        in_background(background, download_and_record, units, task.id, source)
        return {"id": task.id}

    def download_and_record(units: Runner[Imports], task_id: int, source: str) -> None:
        data = download(source)                                # thirty minutes, no session held
        units.run(record_outcome, task_id, len(data))          # one short operation

The lifespan builds the runner when the application starts, keeps it on ``app.state.units``, and
disposes of its engine when the application stops. When a test overrides
[`get_units`][adapters.fastapi.get_units] (``app.dependency_overrides[get_units] = ...``), the
lifespan builds nothing: the app's tests run on the in-memory adapter without touching a database.
``async def`` endpoints take [`AsyncUnits`][adapters.fastapi.AsyncUnits], an
[`AsyncRunner`][uow.AsyncRunner] built by the same lifespan from an async engine.

Why this is right on every FastAPI version: a ``yield`` dependency's exit code (the
``session.close()`` of ``get_db``) has run at different moments. Before 0.106 it ran after the
background tasks; from 0.106 to 0.117 before them, right after the response was sent; from 0.118 on
after them again. [`get_units`][adapters.fastapi.get_units] is a plain dependency, and the runner
holds nothing that needs closing: there is no exit code whose timing could matter.
"""

# No "from __future__ import annotations": FastAPI reads these signatures at run time.

import inspect
import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any, Union

from fastapi import BackgroundTasks, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from uow import AsyncRunner, CommitOutcomeUnknown, ErrorKind, Reason, Runner, retry_details

__all__ = [
    "STATE_ATTRIBUTE",
    "AsyncUnits",
    "UnitOfWorkLifespan",
    "Units",
    "get_async_units",
    "get_units",
    "in_background",
    "install_exception_handlers",
    "units_lifespan",
]

STATE_ATTRIBUTE = "units"
"""Attribute of ``app.state`` that holds the runner while the application runs."""

AnyRunner = Union[Runner[Any], AsyncRunner[Any]]  # noqa: UP007 -- read by FastAPI at run time
logger = logging.getLogger("retrying_uow")
_TRANSIENT = frozenset({ErrorKind.DISCONNECT, ErrorKind.UNAVAILABLE, ErrorKind.FAILOVER,
                        ErrorKind.DEADLOCK, ErrorKind.LOCK_WAIT})  # fmt: skip


def _runner(connection: HTTPConnection, kind: type) -> Any:
    units = getattr(connection.app.state, STATE_ATTRIBUTE, None)
    if not isinstance(units, kind):
        msg = (
            f"no {kind.__name__} on app.state.{STATE_ATTRIBUTE}: create the application with "
            "FastAPI(lifespan=units_lifespan(make_units)) and let it start (with TestClient: "
            "`with TestClient(app) as client:`)"
            + (f"; it holds a {type(units).__name__}" if units is not None else "")
        )
        raise RuntimeError(msg)  # noqa: TRY004 -- a wiring mistake, not a bad argument
    return units


def get_units(connection: HTTPConnection) -> Runner[Any]:
    """Return the application's runner: the dependency behind [`Units`][adapters.fastapi.Units].

    A plain dependency, not a ``yield`` one: the runner holds no session and no
    connection, so nothing is left to close when the request (or its background
    tasks) ends, whichever FastAPI version decides when that is.
    """
    runner: Runner[Any] = _runner(connection, Runner)
    return runner


def get_async_units(connection: HTTPConnection) -> AsyncRunner[Any]:
    """Return the application's async runner: the dependency behind `AsyncUnits`."""
    runner: AsyncRunner[Any] = _runner(connection, AsyncRunner)
    return runner


Units = Annotated[Runner[Any], Depends(get_units)]
"""An endpoint parameter that receives the application's runner: ``units: Units``."""
AsyncUnits = Annotated[AsyncRunner[Any], Depends(get_async_units)]
"""An ``async def`` endpoint's parameter that receives the async runner."""


class UnitOfWorkLifespan:
    """A FastAPI lifespan that builds a runner at startup and disposes of its engine at shutdown.

    ``make_units`` returns the runner (sync or async); it runs when the application starts, in a
    worker thread (building an engine may block). At shutdown the runner's backend is disposed of,
    if it can be (``backend.dispose()``, awaited for an async engine). When
    [`get_units`][adapters.fastapi.get_units] or
    [`get_async_units`][adapters.fastapi.get_async_units] is overridden
    (``app.dependency_overrides``), nothing is built: tests run without a database. To combine it
    with a lifespan of your own, enter it there: ``async with lifespan(app): ...``.
    """

    def __init__(self, make_units: Callable[[], AnyRunner]) -> None:
        """Keep the recipe; nothing is built before the application starts."""
        self._make_units = make_units

    def __call__(self, app: Starlette) -> AbstractAsyncContextManager[None]:
        """Return the context manager FastAPI enters at startup and exits at shutdown."""
        return self._run(app)

    @asynccontextmanager
    async def _run(self, app: Starlette) -> AsyncIterator[None]:
        overrides = getattr(app, "dependency_overrides", {})
        if get_units in overrides or get_async_units in overrides:
            yield
            return
        if getattr(app.state, STATE_ATTRIBUTE, None) is not None:
            msg = f"app.state.{STATE_ATTRIBUTE} is already set: is the lifespan entered twice?"
            raise RuntimeError(msg)
        units: object = await run_in_threadpool(self._make_units)
        if not isinstance(units, Runner | AsyncRunner):
            msg = f"make_units must return a Runner or an AsyncRunner, not {type(units).__name__}"
            raise TypeError(msg)
        setattr(app.state, STATE_ATTRIBUTE, units)
        try:
            yield
        finally:
            delattr(app.state, STATE_ATTRIBUTE)
            dispose = getattr(units.backend, "dispose", None)
            if dispose is not None:
                if inspect.iscoroutinefunction(dispose):
                    await dispose()
                else:
                    await run_in_threadpool(dispose)

    def __repr__(self) -> str:
        return f"UnitOfWorkLifespan({getattr(self._make_units, '__qualname__', 'make_units')})"


def units_lifespan(make_units: Callable[[], AnyRunner]) -> UnitOfWorkLifespan:
    """Return the lifespan that builds the application's runner with ``make_units()``.

    ``make_units`` is the one place the runner is built, e.g.
    ``lambda: Shop.factory(create_engine(url), policy=...)``: every setting of the
    factory is reachable, nothing is repeated here.
    """
    return UnitOfWorkLifespan(make_units)


def in_background(
    background: BackgroundTasks,
    fn: Callable[..., Any],
    /,
    *args: Any,
    **kwargs: Any,
) -> None:
    """Run ``fn(*args, **kwargs)`` after the response, as a FastAPI background task.

    ``fn`` is the job: typically a slow part that holds no session, then one or more
    operations (``units.run(...)``); an ``async def`` is awaited. An exception
    escaping a background task reaches the server, which then drops the client's next
    request on that keep-alive connection; here a failure is logged at ERROR with its
    [`retry_details`][uow.retry_details] instead, and never reaches the server.
    """
    if inspect.iscoroutinefunction(fn):

        async def run_async() -> None:
            try:
                await fn(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 -- logged, see the docstring
                _log_background_failure(fn, error)

        background.add_task(run_async)
        return

    def run() -> None:
        try:
            fn(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 -- logged, see the docstring
            _log_background_failure(fn, error)

    background.add_task(run)


def _log_background_failure(fn: Callable[..., Any], error: Exception) -> None:
    details = retry_details(error)
    fields = details.log_fields() if details is not None else {}
    name = getattr(fn, "__qualname__", type(fn).__qualname__)
    logger.error(
        "background task %s failed: %s (%s)",
        name,
        type(error).__qualname__,
        "no retry details" if details is None else details.reason.value or "retrying",
        extra=fields,
        exc_info=error,
    )


def install_exception_handlers(
    app: FastAPI,
    *,
    retry_after: float | None = None,
    errors: tuple[type[Exception], ...] = (DBAPIError, PoolTimeoutError),
) -> None:
    """Map what the runner gives up on to HTTP answers clients can act on.

    - An operation that gave up on a transient error (lost connection, outage,
      deadlock, failover: attempts or time budget exhausted) answers ``503 Service
      Unavailable`` with ``Retry-After`` (``retry_after`` seconds, by default the
      operation's time budget) and ``{"error": "database_unavailable", "kind": ...}``.
    - [`CommitOutcomeUnknown`][uow.CommitOutcomeUnknown] answers ``500`` with
      ``{"error": "commit_outcome_unknown", "operation": ...}``: the write may or may
      not have happened, so the client must check before repeating it.

    ``errors`` are the exception classes a give-up can have (SQLAlchemy's by default;
    add your backend's). Any other exception is left to FastAPI's own handling.
    """

    async def handle(_request: Request, error: Exception) -> JSONResponse:
        if isinstance(error, CommitOutcomeUnknown):
            return JSONResponse(
                status_code=500,
                content={
                    "error": "commit_outcome_unknown",
                    "operation": error.operation,
                    "detail": "the write may or may not have been saved; check before retrying",
                },
            )
        details = retry_details(error)
        if (
            details is None
            or details.kind not in _TRANSIENT
            or details.reason
            in {
                Reason.NOT_RETRYABLE,
                Reason.NESTED,
            }
        ):
            raise error
        wait = retry_after if retry_after is not None else (details.timeout or 30.0)
        return JSONResponse(
            status_code=503,
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
            content={
                "error": "database_unavailable",
                "kind": details.kind.value,
                "reason": details.reason.value,
            },
        )

    app.add_exception_handler(CommitOutcomeUnknown, handle)
    for error_class in errors:
        app.add_exception_handler(error_class, handle)
