"""Each fault of the FaultProxy, proven against a real MariaDB (no mocks)."""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import shutil
import socket
import subprocess
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pymysql  # type: ignore[import-untyped, unused-ignore]
import pymysql.cursors  # type: ignore[import-untyped, unused-ignore]
import pytest
import sqlalchemy as sa

from servers.mariadb import MariaDBServer, ensure_mariadb_installed
from servers.mysql_proxy import (
    AfterCommitReply,
    AtPacket,
    BeforeCommit,
    Blackhole,
    BlackholeAfterCommit,
    CutMode,
    Fault,
    FaultKind,
    FaultProxy,
    MidResult,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

CR_SERVER_GONE = 2006
CR_SERVER_LOST = 2013
BOTH_MODES = pytest.mark.parametrize("mode", list(CutMode), ids=lambda m: m.value)


@pytest.fixture(autouse=True)
def _no_asyncio_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The proxy's loop must not log errors (unretrieved task exceptions, leaked transports)."""
    yield
    records = [r for when in ("setup", "call", "teardown") for r in caplog.get_records(when)]
    assert not [r for r in records if r.name == "asyncio" and r.levelno >= logging.WARNING]


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDBServer]:
    ensure_mariadb_installed()
    with MariaDBServer() as server:
        # PyMySQL leaks the socket of each unix-socket connect that fails while the
        # server boots; collect those now rather than inside some later test.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        yield server


@pytest.fixture
def table(mariadb: MariaDBServer) -> None:
    mariadb.admin("DROP TABLE IF EXISTS app.items")
    mariadb.admin("CREATE TABLE app.items (id INT PRIMARY KEY, note VARCHAR(32)) ENGINE=InnoDB")


@pytest.fixture
def proxy(mariadb: MariaDBServer) -> Iterator[FaultProxy]:
    with FaultProxy(mariadb.host, mariadb.port) as fault_proxy:
        yield fault_proxy


def connect(proxy: FaultProxy, **kwargs: Any) -> Any:
    """A PyMySQL connection to the app database through the proxy."""
    options: dict[str, Any] = {
        "host": proxy.host,
        "port": proxy.port,
        "user": MariaDBServer.user,
        "password": MariaDBServer.password,
        "database": MariaDBServer.database,
        "connect_timeout": 5,
        "read_timeout": 10,
        "write_timeout": 10,
        "ssl_disabled": True,
    }
    return pymysql.connect(**{**options, **kwargs})


@contextlib.contextmanager
def client(proxy: FaultProxy, **kwargs: Any) -> Iterator[Any]:
    conn = connect(proxy, **kwargs)
    try:
        yield conn
    finally:
        if conn.open:
            conn.close()


def stored_ids(mariadb: MariaDBServer) -> set[int]:
    """Committed rows, read over the admin socket: a direct connection, not the proxy."""
    return {row[0] for row in mariadb.admin("SELECT id FROM app.items")}


def raises_lost(action: Callable[[], object], codes: tuple[int, ...] = (CR_SERVER_LOST,)) -> str:
    with pytest.raises(pymysql.err.OperationalError) as info:
        action()
    assert info.value.args[0] in codes, info.value
    return str(info.value.args[1])


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def assert_mode_visible(message: str, mode: CutMode) -> None:
    # An RST surfaces as ECONNRESET in the client; a FIN as a plain end of stream.
    assert ("Connection reset" in message) is (mode is CutMode.RST), message


@pytest.mark.parametrize("ssl_args", [{"ssl_disabled": True}, {}], ids=["ssl_disabled", "default"])
@pytest.mark.usefixtures("table")
def test_forwards_transparently(
    proxy: FaultProxy, mariadb: MariaDBServer, ssl_args: dict[str, Any]
) -> None:
    options: dict[str, Any] = {
        "host": proxy.host,
        "port": proxy.port,
        "user": mariadb.user,
        "password": mariadb.password,
        "database": mariadb.database,
        **ssl_args,
    }
    conn = pymysql.connect(**options)
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO items VALUES (1, 'a')")
            conn.commit()
            # Big enough both ways for packets to span TCP reads (and reads many packets).
            cur.execute("SELECT LENGTH(%s)", ["x" * 1_000_000])
            assert cur.fetchone() == (1_000_000,)
            cur.execute("SELECT seq, REPEAT('x', 200) FROM seq_1_to_2000")
            assert [row[0] for row in cur.fetchall()] == list(range(1, 2001))
    finally:
        conn.close()
    assert stored_ids(mariadb) == {1}
    stats = proxy.stats()
    assert (stats.connections_accepted, stats.commits_seen, stats.commit_replies_seen) == (1, 1, 1)
    assert stats.cut_count() == 0
    assert stats.faults_fired == 0
    assert eventually(lambda: proxy.stats().connections_open == 0)


@pytest.fixture(scope="module")
def tls_mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDBServer]:
    ensure_mariadb_installed()
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a certificate for a TLS-offering server")
    certs = tmp_path_factory.mktemp("tls")
    key, cert = str(certs / "key.pem"), str(certs / "cert.pem")
    subprocess.run(  # noqa: S603 - fixed arguments
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-keyout", key, "-out", cert),
        ],
        check=True,
        capture_output=True,
    )
    with MariaDBServer(server_args=[f"--ssl-cert={cert}", f"--ssl-key={key}"]) as server:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        yield server


def test_tls_is_forwarded_untouched(tls_mariadb: MariaDBServer) -> None:
    # PyMySQL's default is "TLS if offered": the proxy must pass the encrypted bytes on.
    with FaultProxy(tls_mariadb.host, tls_mariadb.port) as proxy:
        proxy.arm(BeforeCommit())
        with client(proxy, ssl_disabled=None) as conn, conn.cursor() as cur:
            cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            assert cur.fetchone()[1]
            cur.execute("SELECT seq FROM seq_1_to_2000")
            assert len(cur.fetchall()) == 2000
            conn.commit()
        assert not proxy.wait_fired(0)  # no fault can see inside TLS
        stats = proxy.stats()
        assert (stats.commands, stats.commits_seen, stats.connections_accepted) == (0, 0, 1)


@BOTH_MODES
@pytest.mark.usefixtures("table")
def test_before_commit_loses_the_transaction(
    proxy: FaultProxy, mariadb: MariaDBServer, mode: CutMode
) -> None:
    with client(proxy) as conn:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO items VALUES (1, 'lost')")
        server_thread = conn.thread_id()
        proxy.arm(BeforeCommit(mode))
        assert_mode_visible(raises_lost(conn.commit), mode)
    assert proxy.wait_fired(5)
    assert stored_ids(mariadb) == set()
    # The server saw its client vanish: the session ends and its row lock is released.
    assert eventually(
        lambda: (
            not mariadb.admin(
                "SELECT 1 FROM information_schema.PROCESSLIST WHERE ID = %s", [server_thread]
            )
        )
    )
    mariadb.admin(
        "SET STATEMENT innodb_lock_wait_timeout = 5 FOR INSERT INTO app.items VALUES (1, 'b')"
    )
    stats = proxy.stats()
    assert (stats.commits_seen, stats.commit_replies_seen, stats.faults_fired) == (1, 0, 1)
    assert stats.cut_count(FaultKind.BEFORE_COMMIT, mode) == stats.cut_count() == 1


@BOTH_MODES
@pytest.mark.usefixtures("table")
def test_after_commit_reply_commits_but_client_loses(
    proxy: FaultProxy, mariadb: MariaDBServer, mode: CutMode
) -> None:
    with client(proxy) as conn:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO items VALUES (1, 'committed')")
        proxy.arm(AfterCommitReply(mode))
        assert_mode_visible(raises_lost(conn.commit), mode)
    assert proxy.wait_fired(5)
    assert stored_ids(mariadb) == {1}
    stats = proxy.stats()
    assert (stats.commits_seen, stats.commit_replies_seen, stats.faults_fired) == (1, 1, 1)
    assert stats.cut_count(FaultKind.AFTER_COMMIT_REPLY, mode) == stats.cut_count() == 1


@BOTH_MODES
def test_mid_result_cuts_inside_a_result_set(proxy: FaultProxy, mode: CutMode) -> None:
    rows: list[Any] = []
    with client(proxy) as conn:
        cur = conn.cursor(pymysql.cursors.SSCursor)  # unbuffered: rows arrive one by one
        proxy.arm(MidResult(after_packets=10, mode=mode))
        # Too short to reach packet 11 (5 packets) and OK replies: neither matches.
        cur.execute("SELECT 1")
        assert list(cur.fetchall()) == [(1,)]
        cur.execute("DO 1")
        assert not proxy.wait_fired(0)

        def fetch_all() -> None:
            cur.execute("SELECT seq FROM seq_1_to_2000")
            rows.extend(iter(cur.fetchone, None))

        assert_mode_visible(raises_lost(fetch_all), mode)
        # PyMySQL would try to drain the dead unbuffered result in close() and __del__.
        cur._result.unbuffered_active = False
        cur.close()
    assert proxy.wait_fired(5)
    # 10 packets forwarded: column count, column definition, EOF, then 7 rows.
    assert rows == [(i,) for i in range(1, 8)]
    assert proxy.stats().cut_count(FaultKind.MID_RESULT, mode) == 1


def test_mid_result_fails_a_buffered_query(proxy: FaultProxy) -> None:
    with client(proxy) as conn, conn.cursor() as cur:
        proxy.arm(MidResult(after_packets=500, mode=CutMode.RST))
        raises_lost(lambda: cur.execute("SELECT seq, REPEAT('x', 100) FROM seq_1_to_2000"))
    assert proxy.stats().cut_count(FaultKind.MID_RESULT, CutMode.RST) == 1


@BOTH_MODES
@pytest.mark.usefixtures("table")
def test_at_packet_cuts_the_nth_command(
    proxy: FaultProxy, mariadb: MariaDBServer, mode: CutMode
) -> None:
    proxy.arm(AtPacket(4, mode))
    # autocommit=True matches the server default, so connect sends only SET NAMES (command 1).
    with client(proxy, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO items VALUES (1, 'command 2')")
        cur.execute("INSERT INTO items VALUES (2, 'command 3')")
        assert_mode_visible(
            raises_lost(lambda: cur.execute("INSERT INTO items VALUES (3, 'x')")), mode
        )
    assert stored_ids(mariadb) == {1, 2}
    stats = proxy.stats()
    assert stats.commands == 4
    assert stats.cut_count(FaultKind.AT_PACKET, mode) == stats.faults_fired == 1


def test_at_packet_counts_no_handshake_packets(proxy: FaultProxy) -> None:
    proxy.arm(AtPacket(1))
    # Login completes; the cut hits SET NAMES, PyMySQL's first command.
    raises_lost(lambda: connect(proxy))
    stats = proxy.stats()
    # Client: handshake response + SET NAMES; server: greeting + login OK.
    assert (stats.client_packets, stats.server_packets, stats.commands) == (2, 2, 1)
    assert stats.cut_count(FaultKind.AT_PACKET) == 1


def test_blackhole_times_out_the_client(proxy: FaultProxy) -> None:
    with client(proxy, read_timeout=1) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        proxy.arm(Blackhole())
        started = time.monotonic()
        message = raises_lost(lambda: cur.execute("SELECT 2"))
        elapsed = time.monotonic() - started
    assert "timed out" in message
    assert 0.9 <= elapsed < 2.5
    assert proxy.wait_fired(0)
    with client(proxy) as conn, conn.cursor() as cur:  # one-shot: the next connection is fine
        cur.execute("SELECT 3")
    stats = proxy.stats()
    assert (stats.blackholes, stats.faults_fired, stats.cut_count()) == (1, 1, 0)


def test_blackhole_after_commit_commits_and_leaves_the_client_waiting(
    proxy: FaultProxy, mariadb: MariaDBServer, table: None
) -> None:
    """The COMMIT reaches the server and commits; its reply and all later traffic vanish."""
    del table
    proxy.arm(BlackholeAfterCommit())
    with client(proxy, read_timeout=1) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")  # not a COMMIT: forwarded, answered
        cur.execute("INSERT INTO items VALUES (1, 'x')")
        started = time.monotonic()
        message = raises_lost(conn.commit)
        elapsed = time.monotonic() - started
    assert "timed out" in message
    assert 0.9 <= elapsed < 2.5
    assert proxy.wait_fired(0)
    assert stored_ids(mariadb) == {1}  # committed, although the client never heard
    stats = proxy.stats()
    assert (stats.blackholes, stats.faults_fired, stats.cut_count()) == (1, 1, 0)
    assert (stats.commits_seen, stats.commit_replies_seen) == (1, 1)


def test_blackhole_all_then_restore(proxy: FaultProxy) -> None:
    with client(proxy, read_timeout=1) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        proxy.blackhole_all()
        assert "timed out" in raises_lost(lambda: cur.execute("SELECT 2"))
    # New connections are swallowed too: even the server greeting never arrives.
    assert "timed out" in raises_lost(lambda: connect(proxy, read_timeout=1))
    proxy.restore()
    with client(proxy) as conn, conn.cursor() as cur:
        cur.execute("SELECT 3")
        assert cur.fetchall() == ((3,),)


@BOTH_MODES
def test_cut_all_cuts_every_open_connection(proxy: FaultProxy, mode: CutMode) -> None:
    with contextlib.ExitStack() as stack:
        conns = [stack.enter_context(client(proxy)) for _ in range(3)]
        for conn in conns:
            conn.ping(reconnect=False)
        assert proxy.cut_all(mode) == 3
        for conn in conns:
            # Writing to a reset socket fails early (2006); otherwise the read fails (2013).
            raises_lost(
                functools.partial(conn.ping, reconnect=False), (CR_SERVER_GONE, CR_SERVER_LOST)
            )
    assert proxy.stats().cut_count(FaultKind.MANUAL, mode) == 3
    assert proxy.stats().faults_fired == 0
    assert eventually(lambda: proxy.stats().connections_open == 0)


@pytest.mark.usefixtures("table")
def test_times_and_disarm_all(proxy: FaultProxy, mariadb: MariaDBServer) -> None:
    proxy.arm(AfterCommitReply(), times=2)
    outcomes = []
    for row_id in range(1, 4):
        with client(proxy) as conn:
            with conn.cursor() as cur:
                cur.execute("INSERT INTO items VALUES (%s, 'x')", [row_id])
            try:
                conn.commit()
                outcomes.append("ok")
            except pymysql.err.OperationalError as exc:
                outcomes.append(exc.args[0])
    assert outcomes == [CR_SERVER_LOST, CR_SERVER_LOST, "ok"]
    assert proxy.wait_fired(0)
    proxy.arm(BeforeCommit())
    assert not proxy.wait_fired(0.05)
    proxy.disarm_all()
    assert proxy.wait_fired(0)
    with client(proxy) as conn:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO items VALUES (4, 'x')")
        conn.commit()
    assert stored_ids(mariadb) == {1, 2, 3, 4}
    assert proxy.stats().cut_count() == 2


@pytest.mark.usefixtures("table")
def test_chaos_draws_only_faults_that_fit(proxy: FaultProxy, mariadb: MariaDBServer) -> None:
    proxy.set_chaos(7, 1.0, [BeforeCommit()])
    with client(proxy) as conn:  # connect and INSERT are no COMMITs: nothing to draw
        with conn.cursor() as cur:
            cur.execute("INSERT INTO items VALUES (1, 'x')")
        raises_lost(conn.commit)
    assert stored_ids(mariadb) == set()
    proxy.set_chaos(7, 1.0, [MidResult(after_packets=10)])
    # Every command draws, but SET NAMES's OK reply is no result set: only the SELECT is cut.
    with client(proxy, autocommit=True) as conn, conn.cursor() as cur:
        raises_lost(lambda: cur.execute("SELECT seq FROM seq_1_to_2000"))
    proxy.set_chaos(None)
    with client(proxy) as conn:
        conn.ping(reconnect=False)
    stats = proxy.stats()
    assert (stats.chaos_triggered, stats.faults_fired) == (3, 2)
    assert stats.cut_count(FaultKind.BEFORE_COMMIT) == stats.cut_count(FaultKind.MID_RESULT) == 1


@pytest.mark.usefixtures("table")
def test_chaos_with_concurrent_pools(proxy: FaultProxy, mariadb: MariaDBServer) -> None:
    engine = sa.create_engine(
        mariadb.url(host=proxy.host, port=proxy.port),
        pool_size=4,
        max_overflow=2,
        connect_args={"ssl_disabled": True, "read_timeout": 10, "write_timeout": 10},
    )
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
    codes: list[int | None] = []
    lock = threading.Lock()

    def worker(base: int) -> None:
        try:
            for row_id in range(base, base + 20):
                try:
                    with engine.begin() as conn:
                        conn.execute(
                            sa.text("INSERT INTO items VALUES (:id, 'chaos')"), {"id": row_id}
                        )
                    outcome = committed
                except sa.exc.OperationalError as exc:
                    codes.append(exc.orig.args[0] if exc.orig else None)
                    outcome = failed
                with lock:
                    outcome.add(row_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n * 1000,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    proxy.set_chaos(None)
    engine.dispose()
    assert not [thread for thread in threads if thread.is_alive()]
    assert not errors
    assert set(codes) == {CR_SERVER_LOST}
    assert len(committed) + len(failed) == 120
    stored = stored_ids(mariadb)
    stats = proxy.stats()
    assert committed <= stored
    assert len(failed & stored) == stats.cut_count(FaultKind.AFTER_COMMIT_REPLY) > 0
    assert len(failed - stored) == stats.cut_count(FaultKind.BEFORE_COMMIT) > 0
    assert len(failed) == stats.chaos_triggered == stats.faults_fired
    assert stats.commits_seen == 120
    assert stats.connections_accepted >= 4
    assert eventually(lambda: proxy.stats().connections_open == 0)


def _open_fds() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


def test_stop_closes_everything(mariadb: MariaDBServer) -> None:
    gc.collect()
    fds_before = _open_fds()
    proxy = FaultProxy(mariadb.host, mariadb.port)
    proxy.start()
    idle, stuck = connect(proxy), connect(proxy, read_timeout=30)
    proxy.arm(Blackhole())
    outcome: list[BaseException] = []

    def query_into_the_void() -> None:
        try:
            with stuck.cursor() as cur:
                cur.execute("SELECT 1")
        except pymysql.err.OperationalError as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=query_into_the_void)
    waiter.start()
    assert proxy.wait_fired(5)
    started = time.monotonic()
    proxy.stop()  # also closes the blackholed connection: the client stops waiting
    waiter.join(10)
    assert time.monotonic() - started < 5
    assert [exc.args[0] for exc in outcome] == [CR_SERVER_LOST]
    proxy.stop()  # idempotent
    raises_lost(lambda: idle.ping(reconnect=False), (CR_SERVER_GONE, CR_SERVER_LOST))
    assert not any(t.name == "fault-proxy" for t in threading.enumerate())
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((proxy.host, proxy.port), timeout=2).close()
    gc.collect()
    assert _open_fds() == fds_before


def test_invalid_arguments() -> None:
    proxy = FaultProxy("127.0.0.1", 9)
    with pytest.raises(ValueError, match="times"):
        proxy.arm(BeforeCommit(), times=0)
    with pytest.raises(ValueError, match="n must"):
        AtPacket(0)
    with pytest.raises(ValueError, match="after_packets"):
        MidResult(0)
    with pytest.raises(ValueError, match="probability"):
        proxy.set_chaos(1, 1.5, [BeforeCommit()])
    with pytest.raises(RuntimeError, match="not running"):
        proxy.cut_all()
