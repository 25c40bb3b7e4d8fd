"""Run both routes of the imports app side by side and check what each left behind.

    python -m examples.fastapi_app                      # SQLite in a temporary folder
    DATABASE_URL=mysql+pymysql://app:pw@127.0.0.1:3306/app DATABASE_WAIT_TIMEOUT=1 \
        IMPORT_DOWNLOAD_SECONDS=1.6 python -m examples.fastapi_app

It drives the application in-process with FastAPI's TestClient, which runs a request's
background tasks before returning its response (a real server returns first). While a
download runs it counts the connections checked out of the pool: none for
``POST /imports``, one for the old pattern. Against MySQL/MariaDB with a
``DATABASE_WAIT_TIMEOUT`` shorter than the download, the old pattern's commit fails
with 2006/2013 and its import stays "pending"; the new route ends "done" with one
outcome row. Exit status 0 when all of that held.
"""

import dataclasses
import logging
import os
import sys
import tempfile
import uuid
import warnings

from fastapi import FastAPI
from sqlalchemy import make_url
from sqlalchemy.exc import DBAPIError

from adapters.mysql import errno_of
from adapters.sqlalchemy import SqlAlchemyBackend

from .app import Settings, create_app

with warnings.catch_warnings():
    # Starlette 1.x prefers httpx2 for its TestClient; httpx still works.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient


def checked_out(app: FastAPI) -> int:
    """Connections the application's pool has lent out right now."""
    backend = app.state.units.backend
    if not isinstance(backend, SqlAlchemyBackend):
        raise TypeError(backend)
    return int(backend.engine.pool.checkedout())  # type: ignore[attr-defined]


def main() -> int:
    logging.basicConfig(format="  %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    settings = Settings.from_env()
    held: list[int] = []  # connections lent out at the start of each download
    app: FastAPI | None = None

    def observed_download(source: str, seconds: float) -> int:
        assert app is not None  # noqa: S101 -- the app is running when a download starts
        held.append(checked_out(app))
        return settings.download(source, seconds)

    with tempfile.TemporaryDirectory() as workdir:
        if not os.environ.get("DATABASE_URL"):  # a fresh SQLite file, not the app's default
            settings = dataclasses.replace(settings, database_url=f"sqlite:///{workdir}/app.db")
        app = create_app(dataclasses.replace(settings, download=observed_download))
        with TestClient(app) as client:
            ok = compare(client, settings, held)
    print("OK" if ok else "UNEXPECTED: see above")
    return 0 if ok else 1


def compare(client: TestClient, settings: Settings, held: list[int]) -> bool:
    url = make_url(settings.database_url)
    wait_timeout = settings.wait_timeout
    must_fail = (
        url.get_backend_name() in {"mysql", "mariadb"}
        and wait_timeout is not None
        and settings.download_seconds > wait_timeout
    )
    print(f"database: {url!r}, wait_timeout={wait_timeout}, download={settings.download_seconds} s")
    tag = uuid.uuid4().hex[:8]

    print("1. POST /imports: the placeholder in one unit of work, the outcome in another")
    accepted = client.post("/imports", json={"source": f"new-{tag}"}).json()
    new = client.get(f"/imports/{accepted['id']}").json()
    print(f"  202 {accepted}; connections held during the download: {held[-1]}")
    print(f"  GET /imports/{new['id']}: status={new['status']} size={new['size']}")
    new_ok = new["status"] == "done" and new["size"] is not None and held[-1] == 0

    print("2. POST /imports/old-pattern: the request's session goes into the background task")
    failed = False
    try:
        client.post("/imports/old-pattern", json={"source": f"old-{tag}"})
    except Exception as raised:  # TestClient re-raises what the background task raised
        # A class the exception handlers map, raised after the response has started, comes
        # out as Starlette's RuntimeError, from the original error.
        error = raised.__cause__ if isinstance(raised, RuntimeError) else raised
        if not isinstance(error, DBAPIError):
            raise
        failed = True
        print(f"  background commit FAILED: {type(error).__name__}: {error.orig}")
        print(f"  errno={errno_of(error)} connection_invalidated={error.connection_invalidated}")
    print(f"  connections held during the download: {held[-1]}")
    [old] = client.get("/imports", params={"source": f"old-{tag}"}).json()
    print(f"  GET /imports/{old['id']}: status={old['status']} size={old['size']}")
    old_ok = held[-1] == 1
    if must_fail:
        old_ok = old_ok and failed and old["status"] == "pending" and old["size"] is None
        print("  as in production: the server dropped the held connection; the outcome is lost")
    elif not failed:
        print("  it worked here (no short wait_timeout), but held a pooled connection throughout")
    return new_ok and old_ok


if __name__ == "__main__":
    sys.exit(main())
