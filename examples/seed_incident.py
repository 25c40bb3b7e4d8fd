"""The seed incident: a session held across a long download, and the same work done right.

A FastAPI endpoint hands its session to a background task that downloads for 30 minutes, then
commits and gets 2006 "MySQL server has gone away" (or 2013): the server dropped the idle
connection. pool_pre_ping and pool_recycle act at checkout, never on a connection an open
transaction holds. Part 1 replays that. Part 2 downloads holding no session, then writes with
``units.run(record_download, ...)``: the pooled connection went stale too, so attempt 1 fails
and the runner reruns the operation on a fresh connection. One row.

The unit of work is a typed class: ``Downloads.factory(engine)`` returns a
``Runner[Downloads]``, and ``uow.downloads`` is a ``DownloadRepository`` to mypy.

    python examples/seed_incident.py          # SQLite, the server's wait_timeout emulated
    DATABASE_URL=mysql+pymysql://app:pw@127.0.0.1:3306/app python examples/seed_incident.py

Exit status 0: the naive pattern failed as in production and the unit of work wrote one row.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, create_engine, event, func, make_url, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from adapters.mysql import errno_of
from adapters.sqlalchemy import SqlAlchemyRepository, SqlAlchemyUnitOfWork, repository
from uow import RetryDetails, RetryPolicy

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine


class Base(DeclarativeBase):
    pass


class Download(Base):
    __tablename__ = "seed_incident_downloads"
    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(100))
    size: Mapped[int]


class DownloadRepository(SqlAlchemyRepository[Download]):
    model = Download

    def count(self, source: str) -> int:
        query = select(func.count(Download.id)).where(Download.source == source)
        return self.session.scalar(query) or 0


class Downloads(SqlAlchemyUnitOfWork):
    """The unit of work of this program: one session per attempt, its repositories on it."""

    downloads = repository(DownloadRepository)


def count_downloads(uow: Downloads, source: str) -> int:
    return uow.downloads.count(source)


def record_download(uow: Downloads, source: str, size: int) -> None:
    uow.downloads.add(Download(source=source, size=size))


def download(source: str, seconds: float) -> int:
    print(f"  downloading {source} for {seconds:.1f} s (no database work meanwhile) ...")
    time.sleep(seconds)
    return 4096


def naive(engine: Engine, source: str, seconds: float) -> bool:
    """Part 1: the request's session outlives the download. True if it failed as in production."""
    with Session(engine) as session:  # the endpoint's session, handed to the background task
        session.scalar(select(func.count(Download.id)))  # now it holds a connection
        size = download(source, seconds)
        session.add(Download(source=source, size=size))
        try:
            session.commit()
        except DBAPIError as error:
            print(f"  commit FAILED: {type(error).__name__}: {error.orig}")
            invalidated = error.connection_invalidated
            print(f"  errno={errno_of(error)} connection_invalidated={invalidated}")
            return error.connection_invalidated
    print("  commit succeeded: the download was shorter than wait_timeout")
    return False


def with_units(engine: Engine, source: str, seconds: float) -> bool:
    """Part 2: no session during the download; the write is one retried operation."""
    retries: list[RetryDetails] = []
    units = Downloads.factory(
        engine, policy=RetryPolicy(attempts=3, timeout=30), hooks=[retries.append]
    )
    units.run(count_downloads, source)  # the endpoint's short read; its connection is pooled
    size = download(source, seconds)  # meanwhile the server drops that pooled connection
    units.run(record_download, source, size)
    rows = units.run(count_downloads, source)
    for d in retries:  # what a metrics hook would count
        print(f"  hook: attempt {d.attempt} failed: kind={d.kind} errno={d.errno}")
    print(f"  record_download took {len(retries) + 1} attempt(s); rows for {source}: {rows}")
    return rows == 1 and len(retries) >= 1


def emulate_wait_timeout(engine: Engine, wait_timeout: int) -> None:
    """Drop idle SQLite connections as MySQL's wait_timeout would (SQLite never does).

    The client notices a dropped connection at its next statement, so the DBAPI connection
    is closed behind SQLAlchemy's back just before it: "Cannot operate on a closed database."
    is what SQLAlchemy's SQLite dialect reads as a disconnect, as it reads 2006 on MySQL.
    """

    @event.listens_for(engine, "connect")
    def connected(_dbapi_connection: object, record: Any) -> None:
        record.info["last_used"] = time.monotonic()

    @event.listens_for(engine, "before_cursor_execute")
    def drop_if_idle(conn: Connection, *_: object) -> None:
        idle = time.monotonic() - conn.connection.info["last_used"]
        if idle > wait_timeout and conn.connection.dbapi_connection is not None:
            print(f"  [emulated server] idle {idle:.1f} s > wait_timeout={wait_timeout} s: closed")
            conn.connection.dbapi_connection.close()

    @event.listens_for(engine, "after_cursor_execute")
    def used(conn: Connection, *_: object) -> None:
        conn.connection.info["last_used"] = time.monotonic()


def make_engine(url: str, wait_timeout: int, **pool_options: Any) -> Engine:
    if make_url(url).get_backend_name() in {"mysql", "mariadb"}:
        # The server itself drops this session's connections after wait_timeout idle seconds.
        init_command = f"SET SESSION wait_timeout={wait_timeout}"
        return create_engine(url, connect_args={"init_command": init_command}, **pool_options)
    engine = create_engine(url, **pool_options)
    emulate_wait_timeout(engine, wait_timeout)
    return engine


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wait-timeout", type=int, default=2, help="server idle limit, s")
    parser.add_argument("--download-seconds", type=float, help="default: wait timeout + 1")
    args = parser.parse_args()
    seconds = args.download_seconds or args.wait_timeout + 1.0
    logging.basicConfig(format="  %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    with tempfile.TemporaryDirectory() as workdir:
        url = os.environ.get("DATABASE_URL") or f"sqlite:///{workdir}/seed_incident.db"
        # Part 1 gets the usual advice; it acts at checkout only, so it changes nothing there.
        held = make_engine(url, args.wait_timeout, pool_pre_ping=True, pool_recycle=3600)
        # Part 2 needs none (pool_pre_ping would only hide its stale connection from view).
        fresh = make_engine(url, args.wait_timeout)
        print(f"database: {held.url!r}, wait_timeout={args.wait_timeout} s")
        if held.dialect.name == "sqlite":
            print("SQLite never drops connections: the server's wait_timeout is EMULATED")
        Base.metadata.create_all(held)
        print("1. naive: the session is held across the download")
        naive_failed = naive(held, f"naive-{uuid.uuid4().hex[:8]}", seconds)
        print("2. retrying-uow: download first, then one operation per write")
        units_ok = with_units(fresh, f"units-{uuid.uuid4().hex[:8]}", seconds)
        held.dispose()
        fresh.dispose()
    if naive_failed and units_ok:
        print("OK: the naive pattern lost its write; the unit of work wrote exactly one row")
        return 0
    print(f"UNEXPECTED: naive failed={naive_failed}, unit of work ok={units_ok}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
