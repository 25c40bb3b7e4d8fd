"""The MariaDB server of a run: a throwaway one, or the one ``--database-url`` names."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pymysql
from sqlalchemy.engine import make_url

from servers.mariadb import MariaDBServer, ensure_mariadb_installed

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

NO_TLS: dict[str, Any] = {"ssl_disabled": True}
"""PyMySQL connect arguments of every case: TLS off (see ``connect`` for its cost)."""

FAST_COMMIT = ("--innodb-flush-log-at-trx-commit=2",)
"""Server option of the default run: no fsync per COMMIT, so client-side costs show."""


@dataclass(frozen=True)
class Database:
    """Where the MariaDB cases run."""

    url: str
    server: MariaDBServer | None
    """The throwaway server, when this run started one."""

    def pymysql_kwargs(self, **extra: Any) -> dict[str, Any]:
        """Connect arguments of a raw PyMySQL connection to the same database."""
        url = make_url(self.url)
        return {
            "host": url.host or "127.0.0.1",
            "port": url.port or 3306,
            "user": url.username,
            "password": url.password or "",
            "database": url.database,
            **extra,
        }

    def connect(self, **extra: Any) -> pymysql.connections.Connection:
        return pymysql.connect(**self.pymysql_kwargs(**extra))


def given_url(option: str | None) -> str | None:
    """The URL from ``--database-url`` or ``DATABASE_URL``, if it names MySQL/MariaDB."""
    url = option or os.environ.get("DATABASE_URL")
    if not url:
        return None
    parsed = make_url(url)
    if parsed.get_backend_name() not in {"mysql", "mariadb"}:
        raise SystemExit(f"--database-url must name MySQL or MariaDB, not {parsed.drivername}")
    if parsed.get_driver_name() != "pymysql":
        raise SystemExit("--database-url must use the PyMySQL driver (mysql+pymysql://...)")
    return url


@contextlib.contextmanager
def throwaway_server(server_args: Sequence[str] = ()) -> Iterator[MariaDBServer]:
    """Start a private MariaDB server; stop it and delete its files afterwards."""
    ensure_mariadb_installed()
    server = MariaDBServer(server_args=server_args)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@contextlib.contextmanager
def database(url: str | None, *, durable: bool) -> Iterator[Database]:
    """Reuse the server at ``url``, or run a throwaway one for the block."""
    if url is not None:
        yield Database(url, None)
        return
    with throwaway_server(() if durable else FAST_COMMIT) as server:
        yield Database(server.url(), server)


def server_facts(db: Database) -> dict[str, str]:
    """The server's version and the settings that change the figures."""
    connection = db.connect(**NO_TLS)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT @@version, @@innodb_flush_log_at_trx_commit, @@sync_binlog, @@log_bin"
            )
            version, flush, sync_binlog, log_bin = cursor.fetchone()
    finally:
        connection.close()
    return {
        "version": str(version),
        "innodb_flush_log_at_trx_commit": str(flush),
        "sync_binlog": str(sync_binlog),
        "log_bin": str(log_bin),
    }
