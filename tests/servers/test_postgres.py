"""The throwaway PostgreSQL server and its standbys, proven with psycopg (no mocks)."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from psycopg import errors
from sqlalchemy.engine import make_url

from servers.postgres import PostgresServer, ServerNotAvailable, ensure_postgres_installed

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.postgres


def connect(server: PostgresServer, database: str | None = None, **kwargs: Any) -> Any:
    """A psycopg connection as the app role over TCP (password auth)."""
    return psycopg.connect(server.conninfo(database, connect_timeout=10), **kwargs)


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def process_state(pid: int) -> str | None:
    """The /proc state letter of ``pid``; None once it is gone (zombies included)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return None
    return None if state in ("Z", "X") else state


def files_containing(root: Path, secret: str) -> list[str]:
    return [
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and secret.encode() in path.read_bytes()
    ]


def test_programs_are_found() -> None:
    """ensure_postgres_installed() returns a directory with every server program."""
    bin_dir = ensure_postgres_installed()
    for name in ("initdb", "postgres", "pg_ctl", "pg_basebackup"):
        assert os.access(bin_dir / name, os.X_OK)


def test_app_role_logs_in_with_its_password_over_tcp(postgres: PostgresServer) -> None:
    """The app role owns the app database and needs its password on TCP; admin is on the socket."""
    with connect(postgres) as conn:
        row = conn.execute(
            "SELECT current_user, current_database(), inet_server_addr()::text, "
            "inet_server_port(), current_setting('ssl')"
        ).fetchone()
    assert row == ("app", "app", "127.0.0.1/32", postgres.port, "off")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(postgres.conninfo(password=postgres.password + "x"))
    assert postgres.admin("SELECT current_user, inet_server_addr()") == [("postgres", None)]
    settings = dict(
        postgres.admin(
            "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
            [["max_connections", "wal_level", "hot_standby", "max_wal_senders", "fsync"]],
        )
    )
    assert settings == {
        "max_connections": "20",
        "wal_level": "replica",
        "hot_standby": "on",
        "max_wal_senders": "4",
        "fsync": "off",
    }
    assert postgres.admin(
        "SELECT rolsuper, rolreplication FROM pg_roles WHERE rolname = %s", [postgres.user]
    ) == [(False, False)]


def test_urls_name_each_driver(postgres: PostgresServer) -> None:
    """url() gives SQLAlchemy URLs for the three drivers; SQLAlchemy hides their password."""
    for driver, drivername in [
        ("psycopg", "postgresql+psycopg"),
        ("psycopg_async", "postgresql+psycopg_async"),
        ("asyncpg", "postgresql+asyncpg"),
    ]:
        url = make_url(postgres.url("other", driver=driver, port=6543))
        assert (url.drivername, url.username, url.password) == (
            drivername,
            "app",
            postgres.password,
        )
        assert (url.host, url.port, url.database) == ("127.0.0.1", 6543, "other")
        assert postgres.password not in repr(url)
    assert make_url(postgres.url()).database == "app"
    with pytest.raises(ValueError, match="driver must be one of"):
        postgres.url(driver="psycopg2")


def test_query_and_execute_run_as_the_app_role(
    postgres: PostgresServer, postgres_database: str
) -> None:
    """Tables made by execute() belong to the app role, so app connections over TCP can use them."""
    postgres.execute("CREATE TABLE items (id int PRIMARY KEY)", database=postgres_database)
    assert postgres.execute("INSERT INTO items VALUES (1), (2)", database=postgres_database) == 2
    with connect(postgres, postgres_database) as conn:
        conn.execute("INSERT INTO items VALUES (%s)", [3])
    assert postgres.query("SELECT id FROM items ORDER BY id", database=postgres_database) == [
        (1,),
        (2,),
        (3,),
    ]
    assert postgres.query(
        "SELECT tableowner FROM pg_tables WHERE tablename = 'items'", database=postgres_database
    ) == [("app",)]


def test_drop_database_ends_its_sessions(postgres: PostgresServer) -> None:
    """drop_database() works while a client is still connected to the database."""
    name = postgres.create_database("t_dropped_while_used")
    conn = connect(postgres, name, autocommit=True)
    try:
        postgres.drop_database(name)
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    finally:
        conn.close()
    assert not postgres.admin("SELECT 1 FROM pg_database WHERE datname = %s", [name])
    postgres.drop_database(name)  # idempotent


def test_terminate_backends_picks_its_targets(
    postgres: PostgresServer, postgres_database: str
) -> None:
    """terminate_backends() ends the matching client sessions only and returns their pids."""
    with (
        connect(postgres, postgres_database, autocommit=True) as target,
        connect(postgres, autocommit=True) as bystander,
    ):
        target_pid = target.info.backend_pid
        assert postgres.terminate_backends(database=postgres_database) == [target_pid]
        with pytest.raises(errors.AdminShutdown):
            target.execute("SELECT 1")
        assert bystander.execute("SELECT 1").fetchone() == (1,)
        bystander_pid = bystander.info.backend_pid
        assert postgres.terminate_backends(pids=[bystander_pid, 1]) == [bystander_pid]
        with pytest.raises(errors.AdminShutdown):
            bystander.execute("SELECT 1")
    assert postgres.terminate_backends(user="nobody") == []


def test_stop_and_start_keep_data_and_port(private_postgres: PostgresServer) -> None:
    """A fast stop ends sessions with 57P01; start() comes back on the same port with the data."""
    server = private_postgres
    server.execute("CREATE TABLE items (id int PRIMARY KEY)")
    server.execute("INSERT INTO items VALUES (1)")
    held = connect(server, autocommit=True)
    port = server.port
    started = time.monotonic()
    server.stop()
    stop_seconds = time.monotonic() - started
    assert server.pid is None
    assert server._server_pids() == []
    with pytest.raises(errors.AdminShutdown):
        held.execute("SELECT 1")
    held.close()
    with pytest.raises(psycopg.OperationalError, match="Connection refused"):
        connect(server)
    server.stop()  # idempotent
    started = time.monotonic()
    server.start()
    start_seconds = time.monotonic() - started
    assert server.port == port
    assert server.query("SELECT id FROM items") == [(1,)]
    assert stop_seconds < 10
    assert start_seconds < 10


def test_immediate_restart_ends_sessions_without_an_error_code(
    private_postgres: PostgresServer,
) -> None:
    """restart(mode='immediate') drops sessions with a notice only: the error has no SQLSTATE."""
    held = connect(private_postgres, autocommit=True)
    private_postgres.restart(mode="immediate")
    with pytest.raises(psycopg.OperationalError) as info:
        held.execute("SELECT 1")
    held.close()
    assert info.value.sqlstate is None
    with connect(private_postgres) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_kill_crashes_and_restart_recovers(private_postgres: PostgresServer) -> None:
    """kill() takes the postmaster and its backends down; restart() recovers committed work."""
    server = private_postgres
    server.execute("CREATE TABLE items (id int PRIMARY KEY)")
    committed = connect(server, autocommit=True)
    committed.execute("INSERT INTO items VALUES (1)")
    open_tx = connect(server)
    open_tx.execute("INSERT INTO items VALUES (2)")
    old_pids = server._server_pids()
    assert len(old_pids) >= 5  # postmaster, checkpointer, writers, launchers, 2 backends
    server.kill()
    assert server.pid is None
    assert all(process_state(pid) is None for pid in old_pids)
    for conn in (committed, open_tx):
        with pytest.raises(psycopg.OperationalError, match="postmaster exit"):
            conn.execute("SELECT 1")
        conn.close()
    server.restart()
    assert server.query("SELECT id FROM items") == [(1,)]
    assert "database system was interrupted" in server.error_log_tail(50)


def test_freeze_stops_every_process_until_thaw(private_postgres: PostgresServer) -> None:
    """freeze() SIGSTOPs the postmaster and each backend; queries and connects hang until thaw()."""
    server = private_postgres
    held = connect(server, autocommit=True)
    server.freeze()
    try:
        assert server.frozen
        pids = server._server_pids()
        assert server.pid in pids
        assert {process_state(pid) for pid in pids} == {"T"}
        answers: list[object] = []
        query = threading.Thread(
            target=lambda: answers.append(held.execute("SELECT 42").fetchone())
        )
        query.start()
        query.join(0.5)
        assert query.is_alive()  # still waiting on the frozen backend
        started = time.monotonic()
        # The kernel completes the TCP handshake; the startup reply never comes.
        with pytest.raises(psycopg.OperationalError, match="timeout expired"):
            psycopg.connect(server.conninfo(connect_timeout=2))
        assert 1.5 < time.monotonic() - started < 8
    finally:
        server.thaw()
    query.join(30)
    assert answers == [(42,)]
    frozen: bool = server.frozen  # declared: mypy keeps the narrowing from before thaw()
    assert not frozen
    assert {process_state(pid) for pid in server._server_pids()} <= {"S", "R", "D"}
    held.close()
    server.freeze()
    server.stop()  # thaws first, or the fast shutdown would wait forever
    assert server.pid is None


def test_start_failure_names_the_log_and_hides_the_password() -> None:
    """A server that cannot start fails with its log tail, which holds no password."""
    server = PostgresServer(settings={"shared_buffers": "not-a-size"})
    try:
        with pytest.raises(ServerNotAvailable, match="shared_buffers") as info:
            server.start(timeout=60)
        assert server.pid is None
        assert server.password not in str(info.value)
        assert server.password not in repr(server)
    finally:
        server.cleanup()
    assert not server.base_dir.exists()


def test_standby_streams_and_is_promoted(private_postgres: PostgresServer) -> None:
    """make_standby() streams from the primary read-only; promote() makes it writable."""
    primary = private_postgres
    primary.execute("CREATE TABLE items (id int PRIMARY KEY)")
    started = time.monotonic()
    standby = primary.make_standby()
    made_seconds = time.monotonic() - started
    assert standby.primary is primary
    assert standby.port != primary.port
    standby.wait_streaming()
    assert standby.replication_status() == "streaming"
    assert standby.in_recovery()
    assert not primary.in_recovery()
    assert primary.admin("SELECT application_name, state FROM pg_stat_replication") == [
        (f"standby_{standby.port}", "streaming")
    ]
    primary.execute("INSERT INTO items VALUES (1)")
    standby.wait_caught_up()
    assert standby.query("SELECT id FROM items") == [(1,)]
    before_promotion = connect(standby, autocommit=True)
    assert before_promotion.info.parameter_status("in_hot_standby") == "on"
    with pytest.raises(errors.ReadOnlySqlTransaction):
        before_promotion.execute("INSERT INTO items VALUES (2)")
    promote_seconds = standby.promote()
    # Declared: mypy keeps the narrowing from before promote().
    promoted_from: PostgresServer | None = standby.primary
    assert promoted_from is None
    assert not standby.in_recovery()
    assert standby.replication_status() is None
    # A session opened before the promotion survives it and can write at once.
    before_promotion.execute("INSERT INTO items VALUES (2)")
    assert before_promotion.info.parameter_status("in_hot_standby") == "off"
    before_promotion.close()
    assert standby.query("SELECT id FROM items ORDER BY id") == [(1,), (2,)]
    assert primary.query("SELECT id FROM items") == [(1,)]
    with pytest.raises(RuntimeError, match="not a standby"):
        standby.promote()
    assert made_seconds < 30
    assert promote_seconds < 30


def test_passwords_stay_out_of_reprs_logs_and_exceptions(private_postgres: PostgresServer) -> None:
    """Passwords appear in no repr or log; only the standby's own private config holds one."""
    primary = private_postgres
    standby = primary.make_standby()
    standby.wait_streaming()
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(primary.conninfo(password=primary.password + "x"))
    with connect(primary) as conn:
        conn.execute("SELECT 1")
    secrets = [primary.password, primary._replication_password]
    for secret in secrets:
        for server in (primary, standby):
            assert secret not in repr(server)
            assert secret not in server.error_log_tail(10_000)
        assert secret not in str(info.value)
        assert files_containing(primary.base_dir, secret) == []
    assert standby.password == primary.password
    # pg_basebackup -R wrote the replication password into the standby's config, and
    # nowhere else; the folder is private to the server's OS user.
    assert files_containing(standby.base_dir, primary._replication_password) == [
        "data/postgresql.auto.conf"
    ]
    assert files_containing(standby.base_dir, primary.password) == []
    mode = (standby.base_dir / "data" / "postgresql.auto.conf").stat().st_mode
    assert stat.S_IMODE(mode) & 0o077 == 0
    assert stat.S_IMODE(standby.base_dir.stat().st_mode) == 0o700
    standby_dir = standby.base_dir
    primary.cleanup()  # cleans up its standbys first
    assert standby.pid is None
    assert not standby_dir.exists()
