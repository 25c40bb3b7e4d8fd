"""Each fault of the PostgreSQL FaultProxy, proven against a real server (no mocks).

Clients are psycopg (sync) and asyncpg, whose wire formats differ: psycopg sends
``COMMIT`` as a simple query and parameters through Parse/Bind/Describe/Execute/Sync;
asyncpg prepares every statement (Parse/Describe/Flush, then Bind/Execute/Sync) and
sends ``COMMIT;``. What reached the database is always read over the server's unix
socket, never through the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import psycopg
import pytest

from servers.pg_proxy import (
    AfterCommitReply,
    AtMessage,
    BeforeCommit,
    Blackhole,
    CutMode,
    Fault,
    FaultKind,
    FaultProxy,
    MidResult,
)
from servers.postgres import PostgresServer, ensure_postgres_installed

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.postgres

FIN_RST = pytest.mark.parametrize("mode", [CutMode.FIN, CutMode.RST], ids=lambda m: m.value)
DRIVERS = pytest.mark.parametrize("driver", ["psycopg", "asyncpg"])
LOST = "server closed the connection unexpectedly"  # libpq's words for both FIN and RST


@pytest.fixture(autouse=True)
def _no_asyncio_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The proxy's loop must not log errors (unretrieved task exceptions, leaked transports)."""
    yield
    records = [r for when in ("setup", "call", "teardown") for r in caplog.get_records(when)]
    assert not [r for r in records if r.name == "asyncio" and r.levelno >= logging.WARNING]


@pytest.fixture
def db(postgres: PostgresServer, postgres_database: str) -> str:
    """A fresh database with an empty ``items`` table owned by the app role."""
    postgres.execute(
        "CREATE TABLE items (id int PRIMARY KEY, note text)", database=postgres_database
    )
    return postgres_database


@pytest.fixture
def proxy(postgres: PostgresServer, db: str) -> Iterator[FaultProxy]:
    """A fault proxy in front of ``postgres``; stopped before the test's database is dropped."""
    del db  # only orders the teardown
    with FaultProxy(postgres.host, postgres.port) as fault_proxy:
        yield fault_proxy


def connect(server: PostgresServer, proxy: FaultProxy, db: str, **kwargs: Any) -> Any:
    """A psycopg connection to ``db`` through the proxy (sslmode=prefer, the default)."""
    return psycopg.connect(server.conninfo(db, port=proxy.port, connect_timeout=10), **kwargs)


async def aconnect(server: PostgresServer, proxy: FaultProxy, db: str, **kwargs: Any) -> Any:
    """An asyncpg connection to ``db`` through the proxy (ssl='prefer', the default)."""
    options = {"user": server.user, "password": server.password, "database": db, "timeout": 10}
    return await asyncpg.connect(host=proxy.host, port=proxy.port, **{**options, **kwargs})


def stored_ids(server: PostgresServer, db: str) -> list[int]:
    return [row[0] for row in server.query("SELECT id FROM items ORDER BY id", database=db)]


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def backend_state(server: PostgresServer, pid: int) -> tuple[str, str] | None:
    rows = server.admin("SELECT state, wait_event FROM pg_stat_activity WHERE pid = %s", [pid])
    return rows[0] if rows else None


def xact_status(server: PostgresServer, db: str, xid: str) -> str:
    return str(server.query("SELECT pg_xact_status(%s::xid8)", [xid], database=db)[0][0])


def commit_lost_psycopg(
    server: PostgresServer, proxy: FaultProxy, db: str, fault: Fault
) -> tuple[int, str]:
    """Insert row 1 and commit with ``fault`` armed; return the backend pid and the xid."""
    conn = connect(server, proxy, db)
    try:
        conn.execute("INSERT INTO items VALUES (%s, %s)", [1, "psycopg"])
        xid = str(conn.execute("SELECT pg_current_xact_id()").fetchone()[0])
        pid = conn.info.backend_pid
        proxy.arm(fault)
        with pytest.raises(psycopg.OperationalError, match=LOST) as info:
            conn.commit()
        assert info.value.sqlstate is None
    finally:
        conn.close()
    return pid, xid


def commit_lost_asyncpg(
    server: PostgresServer, proxy: FaultProxy, db: str, fault: Fault
) -> tuple[int, str]:
    """As commit_lost_psycopg, with asyncpg's explicit transaction."""

    async def run() -> tuple[int, str]:
        conn = await aconnect(server, proxy, db)
        try:
            tx = conn.transaction()
            await tx.start()
            await conn.execute("INSERT INTO items VALUES ($1, $2)", 1, "asyncpg")
            xid = str(await conn.fetchval("SELECT pg_current_xact_id()"))
            pid = conn.get_server_pid()
            proxy.arm(fault)
            with pytest.raises(asyncpg.ConnectionDoesNotExistError, match="closed in the middle"):
                await tx.commit()
        finally:
            conn.terminate()
        return pid, xid

    return asyncio.run(run())


COMMIT_LOST = {"psycopg": commit_lost_psycopg, "asyncpg": commit_lost_asyncpg}


@DRIVERS
def test_forwards_transparently(
    postgres: PostgresServer, proxy: FaultProxy, db: str, driver: str
) -> None:
    """Without faults, queries, big rows both ways and commits pass through unchanged."""
    big = "x" * 1_000_000
    if driver == "psycopg":
        with connect(postgres, proxy, db) as conn:
            conn.execute("INSERT INTO items VALUES (%s, %s)", [1, "a"])
            conn.commit()
            assert conn.execute("SELECT length(%s)", [big]).fetchone() == (1_000_000,)
            rows = conn.execute("SELECT i, repeat('x', 200) FROM generate_series(1, 20000) i")
            assert [row[0] for row in rows] == list(range(1, 20001))
            assert conn.pgconn.ssl_in_use is False
    else:

        async def run() -> None:
            conn = await aconnect(postgres, proxy, db)
            try:
                async with conn.transaction():
                    await conn.execute("INSERT INTO items VALUES ($1, $2)", 1, "a")
                assert await conn.fetchval("SELECT length($1::text)", big) == 1_000_000
                rows = await conn.fetch("SELECT i FROM generate_series(1, 20000) i")
                assert [row[0] for row in rows] == list(range(1, 20001))
            finally:
                await conn.close()

        asyncio.run(run())
    assert stored_ids(postgres, db) == [1]
    stats = proxy.stats()
    assert (stats.connections_accepted, stats.encryption_requests) == (1, 1)
    commits = 2 if driver == "psycopg" else 1  # leaving psycopg's with-block commits too
    assert stats.commits_seen == stats.commit_replies_seen == commits
    assert stats.messages_by_type["p"] == 2  # SASLInitialResponse, SASLResponse
    assert {"P", "B", "E", "S"} <= set(stats.messages_by_type)
    assert stats.messages_by_type["X"] == 1  # Terminate
    assert stats.cut_count() == stats.faults_fired == 0
    assert eventually(lambda: proxy.stats().connections_open == 0)


@pytest.fixture(scope="module")
def tls_postgres() -> Iterator[PostgresServer]:
    """A server that offers TLS (self-signed), like Debian's packaged clusters."""
    ensure_postgres_installed()
    openssl = shutil.which("openssl")
    assert openssl is not None, "openssl is needed to make a certificate for a TLS server"
    server = PostgresServer(settings={"ssl": "on"})
    try:
        key, cert = server.base_dir / "server.key", server.base_dir / "server.crt"
        subprocess.run(  # noqa: S603 - fixed arguments
            [
                *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
                *("-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)),
            ],
            check=True,
            capture_output=True,
        )
        key.chmod(0o600)
        if os.geteuid() == 0:  # the server runs as the OS user postgres, which must own the key
            for path in (key, cert):
                shutil.chown(path, "postgres", "postgres")
        server.settings.update(ssl_cert_file=str(cert), ssl_key_file=str(key))
        server.start()
        server.execute("CREATE TABLE items (id int PRIMARY KEY, note text)")
        yield server
    finally:
        server.cleanup()


def test_tls_is_forwarded_untouched(tls_postgres: PostgresServer) -> None:
    """sslmode=prefer negotiates TLS through the proxy, which then sees no message to fault."""
    with FaultProxy(tls_postgres.host, tls_postgres.port) as proxy:
        proxy.arm(BeforeCommit())
        with connect(tls_postgres, proxy, tls_postgres.database) as conn:
            assert conn.pgconn.ssl_in_use is True
            assert len(conn.execute("SELECT generate_series(1, 2000)").fetchall()) == 2000
            conn.commit()
        assert not proxy.wait_fired(0)
        stats = proxy.stats()
        assert (stats.encryption_requests, stats.commits_seen) == (1, 0)
        assert stats.messages_by_type == {}


@DRIVERS
def test_refuse_encryption_keeps_faults_working(tls_postgres: PostgresServer, driver: str) -> None:
    """refuse_encryption answers N itself: clients go on in plain text and faults apply."""
    server, db = tls_postgres, tls_postgres.database
    with FaultProxy(server.host, server.port, refuse_encryption=True) as proxy:
        with connect(server, proxy, db) as conn:
            assert conn.pgconn.ssl_in_use is False
        COMMIT_LOST[driver](server, proxy, db, BeforeCommit())
        assert proxy.wait_fired(5)
        assert proxy.stats().encryption_requests == 2
    assert stored_ids(server, db) == []


@DRIVERS
@FIN_RST
def test_before_commit_loses_the_transaction(
    postgres: PostgresServer, proxy: FaultProxy, db: str, driver: str, mode: CutMode
) -> None:
    """The COMMIT never reaches the server: it sees its client vanish and rolls back."""
    pid, xid = COMMIT_LOST[driver](postgres, proxy, db, BeforeCommit(mode))
    assert proxy.wait_fired(5)
    assert eventually(lambda: backend_state(postgres, pid) is None)
    assert stored_ids(postgres, db) == []
    assert xact_status(postgres, db, xid) == "aborted"
    stats = proxy.stats()
    assert (stats.commits_seen, stats.commit_replies_seen, stats.faults_fired) == (1, 0, 1)
    assert stats.cut_count(FaultKind.BEFORE_COMMIT, mode) == stats.cut_count() == 1


@DRIVERS
@FIN_RST
def test_after_commit_reply_commits_but_the_client_never_knows(
    postgres: PostgresServer, proxy: FaultProxy, db: str, driver: str, mode: CutMode
) -> None:
    """The server commits; its reply is swallowed and the client sees the same lost connection."""
    pid, xid = COMMIT_LOST[driver](postgres, proxy, db, AfterCommitReply(mode))
    assert proxy.wait_fired(5)
    assert stored_ids(postgres, db) == [1]
    assert xact_status(postgres, db, xid) == "committed"
    assert eventually(lambda: backend_state(postgres, pid) is None)
    stats = proxy.stats()
    assert (stats.commits_seen, stats.commit_replies_seen, stats.faults_fired) == (1, 1, 1)
    assert stats.cut_count(FaultKind.AFTER_COMMIT_REPLY, mode) == stats.cut_count() == 1


@DRIVERS
def test_half_open_before_commit_leaves_the_transaction_open(
    postgres: PostgresServer, proxy: FaultProxy, db: str, driver: str
) -> None:
    """Only the client side is cut: the server session stays idle in transaction, row locked."""
    pid, xid = COMMIT_LOST[driver](postgres, proxy, db, BeforeCommit(CutMode.HALF_OPEN))
    assert proxy.wait_fired(5)
    assert backend_state(postgres, pid) == ("idle in transaction", "ClientRead")
    assert xact_status(postgres, db, xid) == "in progress"
    assert proxy.stats().half_open_held == 1
    with pytest.raises(psycopg.errors.LockNotAvailable):
        postgres.execute(
            "SET lock_timeout = '100ms'; INSERT INTO items VALUES (1, 'blocked')", database=db
        )
    assert proxy.release_half_open() == 1
    assert eventually(lambda: backend_state(postgres, pid) is None)
    assert xact_status(postgres, db, xid) == "aborted"
    assert stored_ids(postgres, db) == []
    stats = proxy.stats()
    assert (stats.half_open_held, stats.faults_fired) == (0, 1)
    assert stats.cut_count(FaultKind.BEFORE_COMMIT, CutMode.HALF_OPEN) == 1
    assert eventually(lambda: proxy.stats().connections_open == 0)


def test_half_open_transaction_ends_by_terminating_its_backend(
    postgres: PostgresServer, proxy: FaultProxy, db: str
) -> None:
    """An abandoned transaction is settled by pg_terminate_backend; the proxy then lets go."""
    pid, xid = commit_lost_psycopg(postgres, proxy, db, BeforeCommit(CutMode.HALF_OPEN))
    assert postgres.terminate_backends(pids=[pid]) == [pid]
    assert xact_status(postgres, db, xid) == "aborted"
    assert eventually(lambda: proxy.stats().connections_open == 0)
    assert proxy.stats().half_open_held == 0


def test_half_open_after_commit_reply_leaves_an_idle_session(
    postgres: PostgresServer, proxy: FaultProxy, db: str
) -> None:
    """Committed, reply swallowed, client cut: the server session waits, idle, for nobody."""
    pid, xid = commit_lost_psycopg(postgres, proxy, db, AfterCommitReply(CutMode.HALF_OPEN))
    assert proxy.wait_fired(5)
    assert xact_status(postgres, db, xid) == "committed"
    assert backend_state(postgres, pid) == ("idle", "ClientRead")
    assert proxy.cut_all() == 1  # closes the held server side too
    assert eventually(lambda: backend_state(postgres, pid) is None)
    assert stored_ids(postgres, db) == [1]


@pytest.mark.parametrize(
    ("statement", "is_commit"),
    [
        ("COMMIT", True),
        ("commit;", True),
        ("  Commit Work ;\n", True),
        ("END", True),
        ("end transaction;", True),
        ("COMMIT AND NO CHAIN", True),
        ("COMMITTED", False),
        ("SELECT 'COMMIT'", False),
        ("ROLLBACK", False),
        ("INSERT INTO items VALUES (9, 'x'); COMMIT", False),
    ],
)
def test_commit_matching(
    postgres: PostgresServer, proxy: FaultProxy, db: str, statement: str, is_commit: bool
) -> None:
    """COMMIT and END match in any case, with WORK/TRANSACTION and a trailing semicolon."""
    with connect(postgres, proxy, db, autocommit=True) as conn:
        conn.execute("BEGIN")
        conn.execute("INSERT INTO items VALUES (1, 'x')")
        proxy.arm(BeforeCommit())
        with contextlib.suppress(psycopg.Error):
            conn.execute(statement.encode())  # bytes: sent exactly as written, as one Q
        assert proxy.wait_fired(0) is is_commit
        proxy.disarm_all()
        # Read before the with-block ends: psycopg commits an open transaction there.
        stats = proxy.stats()
    assert stats.commits_seen == stats.cut_count(FaultKind.BEFORE_COMMIT) == int(is_commit)


@pytest.mark.parametrize("message_type", ["P", "B", "E", "S"])
def test_at_message_cuts_the_nth_message_of_a_type(
    postgres: PostgresServer, proxy: FaultProxy, db: str, message_type: str
) -> None:
    """Cut at psycopg's 2nd Parse, Bind, Execute or Sync: the 1st statement stays, the 2nd not."""
    proxy.arm(AtMessage(message_type, 2))
    with connect(postgres, proxy, db, autocommit=True) as conn:
        conn.execute("INSERT INTO items VALUES (%s, 'first')", [1])
        with pytest.raises(psycopg.OperationalError, match=LOST):
            conn.execute("INSERT INTO items VALUES (%s, 'second')", [2])
    assert proxy.wait_fired(5)
    # Even Execute, forwarded before a cut Sync, is undone: its implicit transaction
    # ends only at Sync, and the server saw the client vanish first.
    assert stored_ids(postgres, db) == [1]
    stats = proxy.stats()
    assert stats.messages_by_type[message_type] == 2
    assert stats.cut_count(FaultKind.AT_MESSAGE, CutMode.FIN) == stats.faults_fired == 1


@pytest.mark.parametrize(("message_type", "n"), [("H", 1), ("B", 1), ("S", 1)])
def test_at_message_with_asyncpg(
    postgres: PostgresServer, proxy: FaultProxy, db: str, message_type: str, n: int
) -> None:
    """asyncpg's prepare (Parse, Describe, Flush) and execute (Bind, Execute, Sync) can be cut."""

    async def run() -> None:
        conn = await aconnect(postgres, proxy, db)
        try:
            proxy.arm(AtMessage(message_type, n))
            with pytest.raises(asyncpg.ConnectionDoesNotExistError):
                await conn.execute("INSERT INTO items VALUES ($1, 'x')", 1)
        finally:
            conn.terminate()

    asyncio.run(run())
    assert proxy.wait_fired(5)
    assert stored_ids(postgres, db) == []


def test_at_message_counts_authentication_messages(
    postgres: PostgresServer, proxy: FaultProxy, db: str
) -> None:
    """The SASL messages count: AtMessage('p') cuts the login, AtMessage(None, 3) the 1st query."""
    proxy.arm(AtMessage("p", 2))
    with pytest.raises(psycopg.OperationalError, match=LOST):
        connect(postgres, proxy, db)
    proxy.arm(AtMessage(None, 3))
    with (
        connect(postgres, proxy, db) as conn,
        pytest.raises(psycopg.OperationalError, match=LOST),
    ):
        conn.execute("SELECT 1")
    stats = proxy.stats()
    assert stats.messages_by_type == {"p": 4, "Q": 1}
    assert stats.cut_count(FaultKind.AT_MESSAGE) == stats.faults_fired == 2


def _startup_to_first_password_message(proxy: FaultProxy, db: str) -> socket.socket:
    """A raw client: SSLRequest, StartupMessage, then wait for the SASL challenge."""
    sock = socket.create_connection((proxy.host, proxy.port), timeout=10)
    sock.sendall(struct.pack("!ii", 8, 80877103))
    assert sock.recv(1) == b"N"
    params = b"user\0app\0database\0" + db.encode() + b"\0\0"
    sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
    header = sock.recv(5)
    assert header[:1] == b"R"  # AuthenticationSASL
    sock.recv(struct.unpack("!i", header[1:])[0] - 4)
    return sock


@pytest.mark.parametrize("mode", list(CutMode), ids=lambda m: m.value)
def test_cut_modes_on_the_wire(proxy: FaultProxy, db: str, mode: CutMode) -> None:
    """The client gets a FIN (end of stream) or an RST (reset); half-open keeps the server side."""
    sock = _startup_to_first_password_message(proxy, db)
    try:
        proxy.arm(AtMessage("p", 1, mode))
        body = b"SCRAM-SHA-256\0" + struct.pack("!i", -1)
        sock.sendall(b"p" + struct.pack("!i", 4 + len(body)) + body)
        assert proxy.wait_fired(5)
        if mode is CutMode.RST:
            with pytest.raises(ConnectionResetError):
                sock.recv(1)
        else:
            assert sock.recv(1) == b""
    finally:
        sock.close()
    assert proxy.stats().half_open_held == (mode is CutMode.HALF_OPEN)
    assert proxy.release_half_open() == (mode is CutMode.HALF_OPEN)
    assert eventually(lambda: proxy.stats().connections_open == 0)


@DRIVERS
def test_mid_result_cuts_inside_a_result(
    postgres: PostgresServer, proxy: FaultProxy, db: str, driver: str
) -> None:
    """After 10 DataRows of a long result the connection is cut; short results pass."""
    proxy.arm(MidResult(after_rows=10))
    rows: list[int] = []
    if driver == "psycopg":
        with connect(postgres, proxy, db) as conn:
            assert len(conn.execute("SELECT generate_series(1, 10)").fetchall()) == 10
            with pytest.raises(psycopg.OperationalError, match=LOST):
                # Single-row mode: each row reaches the client as it arrives.
                rows.extend(
                    row[0] for row in conn.cursor().stream("SELECT generate_series(1, 2000)")
                )
    else:

        async def run() -> None:
            conn = await aconnect(postgres, proxy, db)
            try:
                assert len(await conn.fetch("SELECT generate_series(1, 10)")) == 10
                with pytest.raises(asyncpg.ConnectionDoesNotExistError):
                    await conn.fetch("SELECT generate_series(1, 2000)")
            finally:
                conn.terminate()

        asyncio.run(run())
    assert proxy.wait_fired(5)
    assert rows == (list(range(1, 11)) if driver == "psycopg" else [])
    assert proxy.stats().cut_count(FaultKind.MID_RESULT) == 1


def test_blackhole_times_out_the_client(
    postgres: PostgresServer, proxy: FaultProxy, db: str
) -> None:
    """A blackholed connection answers nothing; the client's own timeout ends the wait."""

    async def run() -> float:
        conn = await aconnect(postgres, proxy, db)
        try:
            assert await conn.fetchval("SELECT 1") == 1
            proxy.arm(Blackhole())
            started = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await conn.fetchval("SELECT 2", timeout=1)
            return time.monotonic() - started
        finally:
            conn.terminate()

    elapsed = asyncio.run(run())
    assert 0.9 <= elapsed < 5
    assert proxy.wait_fired(0)
    with connect(postgres, proxy, db) as conn:  # one-shot: the next connection is fine
        assert conn.execute("SELECT 3").fetchone() == (3,)
    stats = proxy.stats()
    assert (stats.blackholes, stats.faults_fired, stats.cut_count()) == (1, 1, 0)


def test_blackhole_all_then_restore(postgres: PostgresServer, proxy: FaultProxy, db: str) -> None:
    """blackhole_all() silences live and new connections (accepted, never answered)."""
    with connect(postgres, proxy, db, autocommit=True) as live:
        proxy.blackhole_all()
        killer = threading.Timer(1.0, proxy.cut_all)
        started = time.monotonic()
        killer.start()
        with pytest.raises(psycopg.OperationalError):  # silent until cut_all() ends it
            live.execute("SELECT 2")
        assert time.monotonic() - started >= 0.9
        killer.join()
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError, match="timeout expired"):
        psycopg.connect(postgres.conninfo(db, port=proxy.port, connect_timeout=2))
    assert 1.5 < time.monotonic() - started < 8
    proxy.restore()
    with connect(postgres, proxy, db) as conn:
        assert conn.execute("SELECT 3").fetchone() == (3,)


@FIN_RST
def test_cut_all_cuts_every_open_connection(
    postgres: PostgresServer, proxy: FaultProxy, db: str, mode: CutMode
) -> None:
    """cut_all() cuts each live connection; clients notice at their next statement."""
    with contextlib.ExitStack() as stack:
        conns = [
            stack.enter_context(connect(postgres, proxy, db, autocommit=True)) for _ in range(3)
        ]
        for conn in conns:
            conn.execute("SELECT 1")
        assert proxy.cut_all(mode) == 3
        for conn in conns:
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")
    stats = proxy.stats()
    assert stats.cut_count(FaultKind.MANUAL, mode) == 3
    assert stats.faults_fired == 0
    assert eventually(lambda: proxy.stats().connections_open == 0)


def test_cancel_request_is_forwarded(postgres: PostgresServer, proxy: FaultProxy, db: str) -> None:
    """A CancelRequest (its own untyped connection) reaches the server through the proxy."""
    with connect(postgres, proxy, db, autocommit=True) as conn:
        pid = conn.info.backend_pid

        def cancel_when_sleeping() -> None:
            assert eventually(lambda: backend_state(postgres, pid) == ("active", "PgSleep"))
            conn.cancel_safe()

        canceller = threading.Thread(target=cancel_when_sleeping)
        canceller.start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(30)")
        canceller.join()
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert proxy.stats().connections_accepted == 2


def test_times_and_disarm_all(postgres: PostgresServer, proxy: FaultProxy, db: str) -> None:
    """A fault armed twice fires twice, then commits go through; disarm_all() forgets faults."""
    proxy.arm(AfterCommitReply(), times=2)
    outcomes = []
    for row_id in range(1, 4):
        with connect(postgres, proxy, db) as conn:
            conn.execute("INSERT INTO items VALUES (%s, 'x')", [row_id])
            try:
                conn.commit()
                outcomes.append("ok")
            except psycopg.OperationalError:
                outcomes.append("lost")
    assert outcomes == ["lost", "lost", "ok"]
    assert proxy.wait_fired(0)
    proxy.arm(BeforeCommit())
    assert not proxy.wait_fired(0.05)
    proxy.disarm_all()
    assert proxy.wait_fired(0)
    with connect(postgres, proxy, db) as conn:
        conn.execute("INSERT INTO items VALUES (4, 'x')")
    assert stored_ids(postgres, db) == [1, 2, 3, 4]
    assert proxy.stats().cut_count() == 2


def test_chaos_draws_only_faults_that_fit(
    postgres: PostgresServer, proxy: FaultProxy, db: str
) -> None:
    """Chaos fires COMMIT faults only at COMMITs and AtMessage only at its message type."""
    proxy.set_chaos(7, 1.0, [BeforeCommit()])
    with connect(postgres, proxy, db) as conn:  # login, BEGIN and INSERT draw nothing
        conn.execute("INSERT INTO items VALUES (%s, 'x')", [1])
        with pytest.raises(psycopg.OperationalError, match=LOST):
            conn.commit()
    assert stored_ids(postgres, db) == []
    proxy.set_chaos(7, 1.0, [AtMessage("S", n=99)])  # chaos ignores n
    with connect(postgres, proxy, db, autocommit=True) as conn:
        conn.execute("SELECT 1")  # a simple query: no Sync
        with pytest.raises(psycopg.OperationalError, match=LOST):
            conn.execute("SELECT %s::int", [2])
    proxy.set_chaos(None)
    with connect(postgres, proxy, db) as conn:
        conn.execute("SELECT 3")
    stats = proxy.stats()
    assert (stats.chaos_triggered, stats.faults_fired) == (2, 2)
    assert stats.cut_count(FaultKind.BEFORE_COMMIT) == stats.cut_count(FaultKind.AT_MESSAGE) == 1


def test_chaos_with_concurrent_clients(
    postgres: PostgresServer, proxy: FaultProxy, db: str
) -> None:
    """Random lost COMMITs over 6 threads: every lost one is exactly a before or an after cut."""
    faults: list[Fault] = [
        BeforeCommit(CutMode.FIN),
        BeforeCommit(CutMode.RST),
        AfterCommitReply(CutMode.FIN),
        AfterCommitReply(CutMode.RST),
    ]
    proxy.set_chaos(20240601, 0.25, faults)
    committed: set[int] = set()
    failed: set[int] = set()
    errors: list[BaseException] = []
    messages: set[str] = set()
    lock = threading.Lock()

    def worker(base: int) -> None:
        try:
            for row_id in range(base, base + 20):
                try:
                    with connect(postgres, proxy, db) as conn:
                        conn.execute("INSERT INTO items VALUES (%s, 'chaos')", [row_id])
                    outcome = committed
                except psycopg.OperationalError as exc:
                    messages.add(str(exc).splitlines()[0])
                    outcome = failed
                with lock:
                    outcome.add(row_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n * 1000,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    proxy.set_chaos(None)
    assert not [thread for thread in threads if thread.is_alive()]
    assert not errors
    assert messages == {f"consuming input failed: {LOST}"}
    assert len(committed) + len(failed) == 120
    stored = set(stored_ids(postgres, db))
    stats = proxy.stats()
    assert committed <= stored
    assert len(failed & stored) == stats.cut_count(FaultKind.AFTER_COMMIT_REPLY) > 0
    assert len(failed - stored) == stats.cut_count(FaultKind.BEFORE_COMMIT) > 0
    assert len(failed) == stats.chaos_triggered == stats.faults_fired
    assert stats.commits_seen == 120
    assert eventually(lambda: proxy.stats().connections_open == 0)


def _open_fds() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


def test_stop_closes_everything(postgres: PostgresServer, db: str) -> None:
    """stop() frees waiting clients, closes held server sides, joins the thread, frees the port."""
    gc.collect()
    fds_before = _open_fds()
    proxy = FaultProxy(postgres.host, postgres.port)
    proxy.start()
    idle = connect(postgres, proxy, db, autocommit=True)
    stuck = connect(postgres, proxy, db, autocommit=True)
    pid, _ = commit_lost_psycopg(postgres, proxy, db, BeforeCommit(CutMode.HALF_OPEN))
    proxy.arm(Blackhole())
    outcome: list[BaseException] = []

    def query_into_the_void() -> None:
        try:
            stuck.execute("SELECT 1")
        except psycopg.OperationalError as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=query_into_the_void)
    waiter.start()
    assert proxy.wait_fired(5)
    assert backend_state(postgres, pid) == ("idle in transaction", "ClientRead")
    started = time.monotonic()
    proxy.stop()  # also closes the blackholed and the half-open connections
    waiter.join(10)
    assert time.monotonic() - started < 5
    assert len(outcome) == 1
    assert eventually(lambda: backend_state(postgres, pid) is None)
    proxy.stop()  # idempotent
    with pytest.raises(psycopg.OperationalError):
        idle.execute("SELECT 1")
    for conn in (idle, stuck):
        conn.close()
    assert not any(t.name == "pg-fault-proxy" for t in threading.enumerate())
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((proxy.host, proxy.port), timeout=2).close()
    gc.collect()
    assert _open_fds() == fds_before


def test_invalid_arguments() -> None:
    """Arguments that cannot work are refused at once."""
    proxy = FaultProxy("127.0.0.1", 9)
    with pytest.raises(ValueError, match="times"):
        proxy.arm(BeforeCommit(), times=0)
    with pytest.raises(ValueError, match="n must"):
        AtMessage("P", 0)
    with pytest.raises(ValueError, match="one ASCII letter"):
        AtMessage("PB")
    with pytest.raises(ValueError, match="after_rows"):
        MidResult(0)
    with pytest.raises(ValueError, match="probability"):
        proxy.set_chaos(1, 1.5, [BeforeCommit()])
    with pytest.raises(RuntimeError, match="not running"):
        proxy.cut_all()
