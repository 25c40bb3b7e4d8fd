"""The seed incident done right in FastAPI: no session outlives a unit of work.

``POST /imports`` records a placeholder (status "pending") in one unit of work and
returns at once. After the response, the download runs holding no session and no
connection, and then the outcome (status "done", one outcome row) is recorded in a
second unit of work, rerun whole if the connection it gets turns out to be dead. A
give-up there is logged with its retry details (``in_background``), never raised into
the server.

``POST /imports/old-pattern`` is the incident itself, kept to compare (do not copy it):
the request's ``Depends(get_db)`` session goes into the background task, which holds
its connection through the download and then commits on it. Against MySQL/MariaDB,
once the download outlasts ``wait_timeout``, that commit fails with 2006 or 2013, the
task stays "pending" and the outcome is lost. Meanwhile the held connection is one the
pool cannot give to anyone else.

The operations are typed against ``ImportsUnitOfWork``, a protocol of their own, so
the application's tests run them on the in-memory adapter: they override
``get_units`` and the lifespan then builds no engine at all.

Serve it (any ASGI server; the engine is created at startup, not at import)::

    uvicorn examples.fastapi_app.app:app
    DATABASE_URL=mysql+pymysql://app:pw@127.0.0.1:3306/app DATABASE_WAIT_TIMEOUT=2 \
        IMPORT_DOWNLOAD_SECONDS=3 uvicorn examples.fastapi_app.app:app

or run ``python -m examples.fastapi_app`` for a scripted comparison of the two routes.

Configuration (environment): ``DATABASE_URL`` (default: an SQLite file in the temporary
folder), ``DATABASE_WAIT_TIMEOUT`` (seconds; MySQL/MariaDB only, set on every connection
with ``init_command``, to see the incident without waiting 8 hours),
``IMPORT_DOWNLOAD_SECONDS`` (how long the fake download takes, default 0.2).
"""

import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy import ForeignKey, String, make_url, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from adapters.fastapi import (
    Units,
    get_units,
    in_background,
    install_exception_handlers,
    units_lifespan,
)
from adapters.sqlalchemy import (
    SqlAlchemyBackend,
    SqlAlchemyRepository,
    SqlAlchemyUnitOfWork,
    create_engine,
    repository,
)
from uow import RetryHook, RetryPolicy, Runner, UnitOfWork

# --- The domain: tables, repositories, operations ------------------------------------


class Base(DeclarativeBase):
    pass


class ImportTask(Base):
    __tablename__ = "fastapi_app_imports"
    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))


class ImportOutcome(Base):
    __tablename__ = "fastapi_app_outcomes"
    id: Mapped[int] = mapped_column(primary_key=True)
    # Unique: whatever happens, one import has at most one outcome.
    import_id: Mapped[int] = mapped_column(ForeignKey(ImportTask.id), unique=True)
    size: Mapped[int]


# The ports: what the operations need from a unit of work, whatever the store.
class ImportStore(Protocol):
    def add(self, entity: ImportTask) -> ImportTask: ...
    def get(self, ident: int) -> ImportTask | None: ...
    def by_source(self, source: str) -> Sequence[ImportTask]: ...


class OutcomeStore(Protocol):
    def add(self, entity: ImportOutcome) -> ImportOutcome: ...
    def for_import(self, import_id: int) -> ImportOutcome | None: ...


class ImportsUnitOfWork(UnitOfWork, Protocol):
    # Read-only properties: each store's unit of work declares repositories of its own.
    @property
    def imports(self) -> ImportStore: ...
    @property
    def outcomes(self) -> OutcomeStore: ...


# The SQLAlchemy adapter: repositories on the attempt's session, and the unit of work.
class ImportRepository(SqlAlchemyRepository[ImportTask]):
    model = ImportTask

    def by_source(self, source: str) -> Sequence[ImportTask]:
        query = select(ImportTask).where(ImportTask.source == source).order_by(ImportTask.id)
        return self.session.scalars(query).all()


class OutcomeRepository(SqlAlchemyRepository[ImportOutcome]):
    model = ImportOutcome

    def for_import(self, import_id: int) -> ImportOutcome | None:
        query = select(ImportOutcome).where(ImportOutcome.import_id == import_id)
        return self.session.scalars(query).first()


class Imports(SqlAlchemyUnitOfWork):
    imports = repository(ImportRepository)
    outcomes = repository(OutcomeRepository)


# The operations: functions of a unit of work; the runner commits and reruns them.
def create_placeholder(uow: ImportsUnitOfWork, source: str) -> ImportTask:
    return uow.imports.add(ImportTask(source=source, status="pending"))


@dataclass
class Download:
    """One import's download: fetched after the response, holding no session."""

    source: str
    settings: "Settings"

    def fetch(self) -> int:
        """The slow part (half an hour, in production): no database work at all."""
        return self.settings.download(self.source, self.settings.download_seconds)


def record_outcome(uow: ImportsUnitOfWork, import_id: int, size: int) -> None:
    task = uow.imports.get(import_id)
    if task is None:
        raise LookupError(f"no import {import_id}")  # permanent: never retried
    task.status = "done"
    uow.outcomes.add(ImportOutcome(import_id=import_id, size=size))


def download_and_record(
    units: "Runner[ImportsUnitOfWork]", import_id: int, download: Download
) -> None:
    """The background job: the download holds no session, then one short operation."""
    size = download.fetch()
    # A fresh connection, rerun whole if it is dead; after a lost COMMIT, look, then decide.
    units.using(verify=outcome_recorded(import_id)).run(record_outcome, import_id, size)


def outcome_recorded(import_id: int) -> Callable[[ImportsUnitOfWork], bool]:
    """After a lost COMMIT, tell whether ``record_outcome`` went through (never write twice)."""
    return lambda uow: uow.outcomes.for_import(import_id) is not None


def find_import(uow: ImportsUnitOfWork, import_id: int) -> "ImportStatus | None":
    task = uow.imports.get(import_id)
    return None if task is None else status_of(uow, task)


def find_imports(uow: ImportsUnitOfWork, source: str) -> "list[ImportStatus]":
    return [status_of(uow, task) for task in uow.imports.by_source(source)]


def status_of(uow: ImportsUnitOfWork, task: ImportTask) -> "ImportStatus":
    outcome = uow.outcomes.for_import(task.id)
    size = None if outcome is None else outcome.size
    return ImportStatus(id=task.id, source=task.source, status=task.status, size=size)


def fake_download(source: str, seconds: float) -> int:
    """Stand-in for the half-hour download: sleeps, touches no database, returns a size."""
    time.sleep(seconds)
    return 1024 * len(source)


# --- Configuration: read when the app is made; the engine is made at startup ----------


@dataclass(frozen=True)
class Settings:
    database_url: str
    wait_timeout: int | None = None
    """MySQL/MariaDB: the server drops a connection idle this long (``init_command``)."""
    download_seconds: float = 0.2
    download: Callable[[str, float], int] = fake_download
    engine_options: Mapping[str, Any] = field(default_factory=dict)
    """More ``create_engine`` arguments, e.g. ``pool_size``."""
    policy: RetryPolicy = field(default_factory=lambda: RetryPolicy(attempts=3, timeout=30))
    hooks: tuple[RetryHook, ...] = ()
    create_tables: bool = True

    @classmethod
    def from_env(cls) -> "Settings":
        default_url = f"sqlite:///{tempfile.gettempdir()}/retrying_uow_fastapi_app.db"
        wait_timeout = os.environ.get("DATABASE_WAIT_TIMEOUT")
        return cls(
            database_url=os.environ.get("DATABASE_URL") or default_url,
            wait_timeout=int(wait_timeout) if wait_timeout else None,
            download_seconds=float(os.environ.get("IMPORT_DOWNLOAD_SECONDS") or 0.2),
        )

    def make_engine(self) -> Engine:
        options = dict(self.engine_options)
        is_mysql = make_url(self.database_url).get_backend_name() in {"mysql", "mariadb"}
        if self.wait_timeout is not None and is_mysql:
            connect_args = dict(options.pop("connect_args", {}))
            connect_args["init_command"] = f"SET SESSION wait_timeout={self.wait_timeout}"
            options["connect_args"] = connect_args
        engine = create_engine(self.database_url, **options)
        if self.create_tables:
            Base.metadata.create_all(engine)
        return engine


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


# --- The web layer --------------------------------------------------------------------

ImportUnits = Annotated[Runner[ImportsUnitOfWork], Depends(get_units)]
AppSettings = Annotated[Settings, Depends(get_settings)]


class ImportRequest(BaseModel):
    source: str = Field(min_length=1, max_length=200)


class ImportAccepted(BaseModel):
    id: int
    status: str


class ImportStatus(BaseModel):
    id: int
    source: str
    status: str
    size: int | None


router = APIRouter()


@router.post("/imports", status_code=202)
def start_import(
    body: ImportRequest, background: BackgroundTasks, units: ImportUnits, settings: AppSettings
) -> ImportAccepted:
    task = units.run(create_placeholder, body.source)  # committed; the connection is back
    # After the response; a give-up is logged with its retry details, never raised.
    download = Download(body.source, settings)
    in_background(background, download_and_record, units, task.id, download)
    return ImportAccepted(id=task.id, status=task.status)


@router.get("/imports")
async def list_imports(source: str, units: ImportUnits) -> list[ImportStatus]:
    # The runner blocks while it talks to the database and while it waits to rerun:
    # from an async endpoint, hand it to a worker thread so the event loop keeps serving.
    return await run_in_threadpool(units.run, find_imports, source)


@router.get("/imports/{import_id}")
def get_import(import_id: int, units: ImportUnits) -> ImportStatus:
    found = units.run(find_import, import_id)
    if found is None:
        raise HTTPException(status_code=404, detail=f"no import {import_id}")
    return found


# --- THE OLD PATTERN: the seed incident, kept to compare. Do not copy. -----------------


def get_db(units: Units) -> Iterator[Session]:
    """The classic session dependency (here on the runner's engine, to share the pool)."""
    backend = units.backend
    if not isinstance(backend, SqlAlchemyBackend):
        raise TypeError(backend)
    db = Session(backend.engine)
    try:
        yield db
    finally:
        # FastAPI >= 0.118 and < 0.106: after the background task; 0.106 to 0.117: at the
        # response, before it (and the task quietly opens the closed session again).
        db.close()


@router.post("/imports/old-pattern", status_code=202)
def start_import_old_pattern(
    body: ImportRequest,
    background: BackgroundTasks,
    db: Annotated[Session, Depends(get_db)],
    settings: AppSettings,
) -> ImportAccepted:
    task = ImportTask(source=body.source, status="pending")
    db.add(task)
    db.commit()
    # OLD PATTERN: the request's session goes into the background task. Reading task.id
    # after the commit has already begun a new transaction: a connection is checked out.
    background.add_task(download_and_record_old_pattern, db, task.id, body.source, settings)
    return ImportAccepted(id=task.id, status=task.status)


def download_and_record_old_pattern(
    db: Session, import_id: int, source: str, settings: Settings
) -> None:
    """OLD PATTERN: the session, and its pooled connection, are held through the download."""
    task = db.get(ImportTask, import_id)
    if task is None:
        return
    size = settings.download(source, settings.download_seconds)  # the connection sits idle
    task.status = "done"
    db.add(ImportOutcome(import_id=import_id, size=size))
    db.commit()  # 2006 "MySQL server has gone away" once the wait outlasted wait_timeout


# --- The application ------------------------------------------------------------------


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; the engine is created when it starts, disposed when it stops."""
    settings = settings or Settings.from_env()
    configured = settings

    def make_units() -> Runner[Imports]:  # at startup, in a worker thread
        return Imports.factory(
            configured.make_engine(), policy=configured.policy, hooks=configured.hooks
        )

    app = FastAPI(title="imports", lifespan=units_lifespan(make_units))
    app.state.settings = settings
    app.include_router(router)
    install_exception_handlers(app)  # give-ups: 503 + Retry-After; lost COMMIT: its own 500
    return app


app = create_app()
