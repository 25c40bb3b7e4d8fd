"""The imports application of ``examples/fastapi_app``, with ``async def`` operations.

``POST /imports`` records a placeholder (status "pending") in one async unit of work and
answers 202 at once. After the response, the download is awaited holding no session and
no connection, and then the outcome (status "done", one outcome row) is recorded in a
second unit of work, rerun whole if the connection it gets turns out to be dead; after a
lost COMMIT, ``verify`` looks before anything is written again. A give-up there is logged
with its retry details (``in_background``), never raised into the server.

The endpoints take the application's [`AsyncRunner`][uow.AsyncRunner] (``get_async_units``),
built at startup from an AsyncEngine (asyncmy or aiomysql for MySQL/MariaDB, aiosqlite by
default); the database is never touched on the event loop's thread other than by
awaiting. The tables and the request and response models are the sync example's.

The operations are typed against ``AsyncImportsUnitOfWork``, a protocol of their own, so
the application's tests run them on the async in-memory adapter: they override
``get_async_units`` and the lifespan then builds no engine at all.

Serve it (any ASGI server; the engine is created at startup, not at import)::

    uvicorn examples.fastapi_async_app.app:app
    DATABASE_URL=mysql+asyncmy://app:pw@127.0.0.1:3306/app DATABASE_WAIT_TIMEOUT=2 \
        IMPORT_DOWNLOAD_SECONDS=3 uvicorn examples.fastapi_async_app.app:app

Configuration (environment): ``DATABASE_URL`` (an async driver's URL; default: an SQLite
file in the temporary folder, through aiosqlite), ``DATABASE_WAIT_TIMEOUT`` (seconds;
MySQL/MariaDB only, set on every connection with ``init_command``),
``IMPORT_DOWNLOAD_SECONDS`` (how long the fake download takes, default 0.2).
"""

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, HTTPException, Request
from sqlalchemy import make_url, select
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.fastapi import (
    STATE_ATTRIBUTE,
    get_async_units,
    in_background,
    install_exception_handlers,
    units_lifespan,
)
from adapters.sqlalchemy import (
    AsyncSqlAlchemyBackend,
    AsyncSqlAlchemyRepository,
    AsyncSqlAlchemyUnitOfWork,
    create_async_engine,
    repository,
)
from examples.fastapi_app.app import (
    Base,
    ImportAccepted,
    ImportOutcome,
    ImportRequest,
    ImportStatus,
    ImportTask,
)
from uow import AsyncRunner, RetryHook, RetryPolicy, UnitOfWork

# --- The ports: what the operations need from a unit of work, whatever the store -------


class AsyncImportStore(Protocol):
    def add(self, entity: ImportTask) -> ImportTask: ...
    async def get(self, ident: int) -> ImportTask | None: ...
    async def by_source(self, source: str) -> Sequence[ImportTask]: ...


class AsyncOutcomeStore(Protocol):
    def add(self, entity: ImportOutcome) -> ImportOutcome: ...
    async def for_import(self, import_id: int) -> ImportOutcome | None: ...


class AsyncImportsUnitOfWork(UnitOfWork, Protocol):
    @property
    def imports(self) -> AsyncImportStore: ...
    @property
    def outcomes(self) -> AsyncOutcomeStore: ...
    async def flush(self) -> None: ...


# --- The SQLAlchemy adapter: repositories on the attempt's AsyncSession ----------------


class AsyncImportRepository(AsyncSqlAlchemyRepository[ImportTask]):
    model = ImportTask

    async def by_source(self, source: str) -> Sequence[ImportTask]:
        query = select(ImportTask).where(ImportTask.source == source).order_by(ImportTask.id)
        return (await self.session.scalars(query)).all()


class AsyncOutcomeRepository(AsyncSqlAlchemyRepository[ImportOutcome]):
    model = ImportOutcome

    async def for_import(self, import_id: int) -> ImportOutcome | None:
        query = select(ImportOutcome).where(ImportOutcome.import_id == import_id)
        return (await self.session.scalars(query)).first()


class AsyncImports(AsyncSqlAlchemyUnitOfWork):
    imports = repository(AsyncImportRepository)
    outcomes = repository(AsyncOutcomeRepository)


# --- The operations: async functions of a unit of work; the runner commits and reruns --


async def create_placeholder(uow: AsyncImportsUnitOfWork, source: str) -> ImportStatus:
    task = uow.imports.add(ImportTask(source=source, status="pending"))
    await uow.flush()  # the id, before the commit
    return ImportStatus(id=task.id, source=task.source, status=task.status, size=None)


async def record_outcome(uow: AsyncImportsUnitOfWork, import_id: int, size: int) -> None:
    task = await uow.imports.get(import_id)
    if task is None:
        raise LookupError(f"no import {import_id}")  # permanent: never retried
    task.status = "done"
    uow.outcomes.add(ImportOutcome(import_id=import_id, size=size))


def outcome_recorded(import_id: int) -> Callable[[AsyncImportsUnitOfWork], Awaitable[bool]]:
    """After a lost COMMIT, tell whether ``record_outcome`` went through (never write twice)."""

    async def recorded(uow: AsyncImportsUnitOfWork) -> bool:
        return await uow.outcomes.for_import(import_id) is not None

    return recorded


async def find_import(uow: AsyncImportsUnitOfWork, import_id: int) -> ImportStatus | None:
    task = await uow.imports.get(import_id)
    return None if task is None else await status_of(uow, task)


async def find_imports(uow: AsyncImportsUnitOfWork, source: str) -> list[ImportStatus]:
    return [await status_of(uow, task) for task in await uow.imports.by_source(source)]


async def status_of(uow: AsyncImportsUnitOfWork, task: ImportTask) -> ImportStatus:
    outcome = await uow.outcomes.for_import(task.id)
    size = None if outcome is None else outcome.size
    return ImportStatus(id=task.id, source=task.source, status=task.status, size=size)


async def fake_download(source: str, seconds: float) -> int:
    """Stand-in for the half-hour download: awaits, touches no database, returns a size."""
    await asyncio.sleep(seconds)
    return 1024 * len(source)


@dataclass
class Download:
    """One import's download: awaited after the response, holding no session."""

    source: str
    settings: "Settings"

    async def fetch(self) -> int:
        return await self.settings.download(self.source, self.settings.download_seconds)


async def download_and_record(
    units: AsyncRunner[AsyncImportsUnitOfWork], import_id: int, download: Download
) -> None:
    """The background job: the download holds no session, then one short operation."""
    size = await download.fetch()
    # A fresh connection, rerun whole if it is dead; after a lost COMMIT, look, then decide.
    await units.using(verify=outcome_recorded(import_id)).run(record_outcome, import_id, size)


# --- Configuration: read when the app is made; the engine is made at startup ----------


@dataclass(frozen=True)
class Settings:
    database_url: str
    wait_timeout: int | None = None
    """MySQL/MariaDB: the server drops a connection idle this long (``init_command``)."""
    download_seconds: float = 0.2
    download: Callable[[str, float], Awaitable[int]] = fake_download
    engine_options: Mapping[str, Any] = field(default_factory=dict)
    """More ``create_async_engine`` arguments, e.g. ``pool_size``."""
    policy: RetryPolicy = field(default_factory=lambda: RetryPolicy(attempts=3, timeout=30))
    hooks: tuple[RetryHook, ...] = ()
    create_tables: bool = True

    @classmethod
    def from_env(cls) -> "Settings":
        default_url = f"sqlite+aiosqlite:///{tempfile.gettempdir()}/retrying_uow_async_app.db"
        wait_timeout = os.environ.get("DATABASE_WAIT_TIMEOUT")
        return cls(
            database_url=os.environ.get("DATABASE_URL") or default_url,
            wait_timeout=int(wait_timeout) if wait_timeout else None,
            download_seconds=float(os.environ.get("IMPORT_DOWNLOAD_SECONDS") or 0.2),
        )

    def make_engine(self) -> AsyncEngine:
        options = dict(self.engine_options)
        is_mysql = make_url(self.database_url).get_backend_name() in {"mysql", "mariadb"}
        if self.wait_timeout is not None and is_mysql:
            connect_args = dict(options.pop("connect_args", {}))
            connect_args["init_command"] = f"SET SESSION wait_timeout={self.wait_timeout}"
            options["connect_args"] = connect_args
        return create_async_engine(self.database_url, **options)


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


# --- The web layer --------------------------------------------------------------------

ImportUnits = Annotated[AsyncRunner[AsyncImportsUnitOfWork], Depends(get_async_units)]
AppSettings = Annotated[Settings, Depends(get_settings)]

router = APIRouter()


@router.post("/imports", status_code=202)
async def start_import(
    body: ImportRequest, background: BackgroundTasks, units: ImportUnits, settings: AppSettings
) -> ImportAccepted:
    task = await units.run(create_placeholder, body.source)  # committed; connection back
    # After the response; a give-up is logged with its retry details, never raised.
    in_background(background, download_and_record, units, task.id, Download(body.source, settings))
    return ImportAccepted(id=task.id, status=task.status)


@router.get("/imports")
async def list_imports(source: str, units: ImportUnits) -> list[ImportStatus]:
    return await units.run(find_imports, source)


@router.get("/imports/{import_id}")
async def get_import(import_id: int, units: ImportUnits) -> ImportStatus:
    found = await units.run(find_import, import_id)
    if found is None:
        raise HTTPException(status_code=404, detail=f"no import {import_id}")
    return found


# --- The application ------------------------------------------------------------------


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; the engine is created when it starts, disposed when it stops."""
    settings = settings or Settings.from_env()
    configured = settings

    def make_units() -> AsyncRunner[AsyncImports]:  # at startup, in a worker thread
        return AsyncImports.factory(
            configured.make_engine(), policy=configured.policy, hooks=configured.hooks
        )

    units = units_lifespan(make_units)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with units(app):
            runner = getattr(app.state, STATE_ATTRIBUTE, None)  # None: overridden in tests
            if configured.create_tables and runner is not None:
                backend = runner.backend
                if isinstance(backend, AsyncSqlAlchemyBackend):
                    async with backend.engine.begin() as connection:
                        await connection.run_sync(Base.metadata.create_all)
            yield

    app = FastAPI(title="imports (async)", lifespan=lifespan)
    app.state.settings = settings
    app.include_router(router)
    install_exception_handlers(app)  # give-ups: 503 + Retry-After; lost COMMIT: its own 500
    return app


app = create_app()
