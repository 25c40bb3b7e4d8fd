"""Lost COMMITs and cut connections against a real MariaDB, through the fault proxy.

Each operation reads a result set, inserts one row keyed by the operation (the key has
a non-unique index, so a second copy would show) and increments a counter. The proxy
cuts the connection at one protocol point; then the database must hold exactly the
rows expected (0 or 1, never 2) and the call must return or raise as specified for the
strategy that settles a lost COMMIT: none (default), idempotent, verification, markers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from adapters.mysql import SUPPORT
from adapters.sqlalchemy import (
    MARKER_TABLE,
    CommitMarkers,
    SqlAlchemyUnitOfWork,
    create_commit_marker_table,
)
from adapters.sqlalchemy._databases import AttemptState
from servers.mysql_proxy import (
    AfterCommitReply,
    AtPacket,
    BeforeCommit,
    Blackhole,
    CutMode,
    Fault,
    FaultProxy,
    MidResult,
)
from uow import (
    AttemptInfo,
    CommitOutcomeUnknown,
    ErrorKind,
    RetryDetails,
    RetryPolicy,
    Runner,
    retry_details,
)
from uow._commit import RESOLUTION_GRACE

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy.engine import Engine

    from servers.mariadb import MariaDBServer
    from servers.mysql_proxy import _Conn

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

CR_SERVER_LOST = 2013
STRATEGIES = ("default", "idempotent", "verify", "markers")
SEQ_ROWS = 50  # the result set every operation reads: 54 packets, enough for MidResult(10)
POLICY = RetryPolicy(attempts=3, timeout=10, wait_initial=0.01, wait_max=0.05)
BUDGET_POLICY = RetryPolicy(timeout=3)
SLACK = 0.75  # scheduling noise on a loaded two-core machine


@dataclasses.dataclass(frozen=True)
class Placed:
    """What the operation returns: the attempt that wrote the row, and the row's token."""

    attempt: int
    token: str


class Scenario:
    """One database, one engine through the proxy, one runner for a strategy, and records."""

    def __init__(
        self,
        mariadb: MariaDBServer,
        database: str,
        proxy: FaultProxy,
        engine: Engine,
        *,
        strategy: str,
        policy: RetryPolicy = POLICY,
    ) -> None:
        self.mariadb, self.database, self.proxy, self.engine = mariadb, database, proxy, engine
        self.strategy = strategy
        self.key = f"op-{uuid.uuid4().hex[:12]}"
        self.attempts: list[int] = []
        self.records: list[RetryDetails] = []
        self.tokens: list[str] = []  # commit-marker tokens, in the order they were written
        self.before_insert: Callable[[], None] | None = None  # called in attempt 1 only
        db = f"`{database}`"
        mariadb.admin(
            f"CREATE TABLE {db}.items (id INT AUTO_INCREMENT PRIMARY KEY,"
            " op_key VARCHAR(40) NOT NULL, attempt INT NOT NULL, token CHAR(32) NOT NULL,"
            " KEY ix_items_op_key (op_key)) ENGINE=InnoDB"
        )
        mariadb.admin(f"CREATE TABLE {db}.counter (id INT PRIMARY KEY, n INT NOT NULL)")
        mariadb.admin(f"INSERT INTO {db}.counter VALUES (1, 0)")
        markers = strategy == "markers"
        if markers:
            create_commit_marker_table(engine)
        units: Runner[Any] = SqlAlchemyUnitOfWork.factory(
            engine, policy=policy, hooks=[self.records.append], commit_markers=markers
        )
        if strategy == "idempotent":
            units = units.using(idempotent=True)
        elif strategy == "verify":
            units = units.using(verify=self.verify)
        self.runner = units
        if markers:
            self.markers = self.backend_markers()

            def new_token() -> str:
                token = CommitMarkers.new_token()
                self.tokens.append(token)
                return token

            self.markers.new_token = new_token  # type: ignore[method-assign]

    def backend_markers(self) -> CommitMarkers:
        markers = self.runner.backend.commit_markers  # type: ignore[attr-defined]
        assert isinstance(markers, CommitMarkers)
        return markers

    # The operation and its verification.

    def operation(self, uow: Any) -> Placed:
        """Read a result set, write the row (if absent, when idempotent), bump the counter."""
        self.attempts.append(uow.attempt.number)
        session = uow.session
        rows = session.execute(text(f"SELECT seq FROM seq_1_to_{SEQ_ROWS}")).all()
        assert len(rows) == SEQ_ROWS
        if self.strategy == "idempotent":
            # Truly idempotent: insert if absent, under a lock, so a rerun after a commit
            # that did land changes nothing.
            found = session.execute(
                text("SELECT attempt, token FROM items WHERE op_key = :key FOR UPDATE"),
                {"key": self.key},
            ).first()
            if found is not None:
                return Placed(found.attempt, found.token)
        placed = Placed(uow.attempt.number, uuid.uuid4().hex)
        if self.before_insert is not None and placed.attempt == 1:
            self.before_insert()
        session.execute(
            text("INSERT INTO items (op_key, attempt, token) VALUES (:key, :attempt, :token)"),
            {"key": self.key, "attempt": placed.attempt, "token": placed.token},
        )
        session.execute(text("UPDATE counter SET n = n + 1 WHERE id = 1"))
        return placed

    def verify(self, uow: Any) -> bool:
        count = uow.session.execute(
            text("SELECT COUNT(*) FROM items WHERE op_key = :key"), {"key": self.key}
        ).scalar_one()
        return bool(count)

    def run(self) -> Placed:
        placed = self.runner.run(self.operation)
        assert isinstance(placed, Placed)
        return placed

    # What is in the database, read over the admin socket.

    def query(self, sql: str, params: list[object] | None = None) -> list[tuple[Any, ...]]:
        return self.mariadb.admin(sql.replace("{db}", f"`{self.database}`"), params)

    def stored(self) -> list[Placed]:
        rows = self.query(
            "SELECT attempt, token FROM {db}.items WHERE op_key = %s ORDER BY id", [self.key]
        )
        return [Placed(int(attempt), token) for attempt, token in rows]

    def counter(self) -> int:
        return int(self.query("SELECT n FROM {db}.counter WHERE id = 1")[0][0])

    def marker_tokens(self) -> set[str]:
        return {row[0] for row in self.query(f"SELECT token FROM {{db}}.{MARKER_TABLE}")}

    # Preparing the engine.

    def warm_up(self) -> None:
        """Run one operation unharmed, then empty the pool.

        The dialect reads the server's settings on the first connect (result sets a
        MidResult could hit) and the markers' first prune runs after the first commit.
        After this, the next attempt starts on a fresh connection.
        """
        key, self.key = self.key, f"warm-{self.key}"
        try:
            self.run()
        finally:
            self.key = key
        self.attempts.clear()
        self.records.clear()
        self.engine.dispose()
        # PyMySQL sends COM_QUIT and closes without waiting: let the proxy see it all.
        assert eventually(lambda: self.proxy.stats().connections_open == 0)


def eventually(check: Callable[[], bool], timeout: float = 5.0, pause: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(pause)
    return True


def resolutions(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    """The lost-COMMIT resolutions logged: (uow_commit_outcome, uow_commit_source)."""
    return [
        (getattr(record, "uow_commit_outcome"), getattr(record, "uow_commit_source"))  # noqa: B009
        for record in caplog.records
        if record.name == "retrying_uow" and hasattr(record, "uow_commit_outcome")
    ]


def driver_errno(error: BaseException | None) -> int | None:
    assert isinstance(error, OperationalError), repr(error)
    return int(error.orig.args[0]) if error.orig is not None else None


@pytest.fixture
def make_scenario(
    mariadb: MariaDBServer,
    database: str,
    proxy: FaultProxy,
    make_engine: Callable[..., Engine],
    caplog: pytest.LogCaptureFixture,
) -> Callable[..., Scenario]:
    """Build the test's scenario: a strategy, a policy, and the proxy to go through."""
    caplog.set_level(logging.WARNING, logger="retrying_uow")

    def make(
        strategy: str, policy: RetryPolicy = POLICY, through: FaultProxy | None = None
    ) -> Scenario:
        via = proxy if through is None else through
        engine = make_engine(mariadb.url(database, host=via.host, port=via.port))
        return Scenario(mariadb, database, via, engine, strategy=strategy, policy=policy)

    return make


@pytest.fixture
def scenario(request: pytest.FixtureRequest, make_scenario: Callable[..., Scenario]) -> Scenario:
    return make_scenario(request.param)


by_strategy = pytest.mark.parametrize("scenario", STRATEGIES, indirect=True)
by_mode = pytest.mark.parametrize("mode", list(CutMode), ids=lambda m: m.value)


# 1. Cut points x modes x strategies: exactly the rows expected, never two.


@by_strategy
@by_mode
def test_before_commit(scenario: Scenario, mode: CutMode, caplog: pytest.LogCaptureFixture) -> None:
    """COMMIT never reaches the server: default raises unknown; the others rerun, one row."""
    scenario.warm_up()
    scenario.proxy.arm(BeforeCommit(mode))
    if scenario.strategy == "default":
        with pytest.raises(CommitOutcomeUnknown) as caught:
            scenario.run()
        assert driver_errno(caught.value.__cause__) == CR_SERVER_LOST
        assert scenario.attempts == [1]
        assert scenario.stored() == []
        assert scenario.counter() == 1  # the warm-up's
        assert resolutions(caplog) == [("unknown", "none")]
        return
    placed = scenario.run()
    assert scenario.proxy.wait_fired(0)
    assert scenario.attempts == [1, 2]
    assert scenario.stored() == [placed]
    assert placed.attempt == 2
    assert scenario.counter() == 2
    [retry] = [r for r in scenario.records if r.will_retry]
    assert (retry.attempt, retry.kind, retry.errno) == (1, ErrorKind.DISCONNECT, CR_SERVER_LOST)
    expected = {
        "idempotent": ("unknown", "none"),
        "verify": ("absent", "verification"),
        "markers": ("absent", "commit marker"),
    }[scenario.strategy]
    assert resolutions(caplog) == [expected]
    if scenario.strategy == "markers":
        # Attempt 1's marker rolled back with it; attempt 2's committed (and the warm-up's).
        warm_up, first, second = scenario.tokens
        assert scenario.marker_tokens() == {warm_up, second}
        assert first not in scenario.marker_tokens()


@by_strategy
@by_mode
def test_after_commit_reply(
    scenario: Scenario, mode: CutMode, caplog: pytest.LogCaptureFixture
) -> None:
    """The server committed, the reply is lost: one row; only idempotent reruns (harmlessly)."""
    scenario.warm_up()
    scenario.proxy.arm(AfterCommitReply(mode))
    if scenario.strategy == "default":
        with pytest.raises(CommitOutcomeUnknown) as caught:
            scenario.run()
        assert driver_errno(caught.value.__cause__) == CR_SERVER_LOST
        assert scenario.attempts == [1]
        [stored] = scenario.stored()
        assert stored.attempt == 1
        assert scenario.counter() == 2
        assert resolutions(caplog) == [("unknown", "none")]
        return
    placed = scenario.run()
    assert scenario.proxy.wait_fired(0)
    # The row and the returned value are attempt 1's: nothing was written twice.
    assert scenario.stored() == [placed]
    assert placed.attempt == 1
    assert scenario.counter() == 2
    if scenario.strategy == "idempotent":
        assert scenario.attempts == [1, 2]  # rerun, found its row, changed nothing
        assert resolutions(caplog) == [("unknown", "none")]
        return
    assert scenario.attempts == [1]  # no rerun
    assert not scenario.records
    source = {"verify": "verification", "markers": "commit marker"}[scenario.strategy]
    assert resolutions(caplog) == [("committed", source)]
    if scenario.strategy == "markers":
        warm_up, first = scenario.tokens
        assert scenario.marker_tokens() == {warm_up, first}


def _rerun_before_commit(
    scenario: Scenario, faults: list[Fault], statement: str, caplog: pytest.LogCaptureFixture
) -> None:
    placed = scenario.run()
    assert faults
    assert scenario.proxy.wait_fired(0), f"{faults} did not fire"
    assert scenario.attempts == [1, 2]
    assert scenario.stored() == [placed]
    assert placed.attempt == 2
    assert scenario.counter() == 2
    [retry] = [r for r in scenario.records if r.will_retry]
    assert (retry.attempt, retry.kind, retry.errno) == (1, ErrorKind.DISCONNECT, CR_SERVER_LOST)
    assert isinstance(retry.error, OperationalError)
    assert str(retry.error.statement).startswith(statement)  # the statement that was cut
    assert resolutions(caplog) == []  # known rolled back: no COMMIT was in flight
    if scenario.strategy == "markers":
        # Attempt 1 failed before its flush, so it never wrote a marker.
        warm_up, second = scenario.tokens
        assert scenario.marker_tokens() == {warm_up, second}


@by_strategy
@by_mode
def test_mid_result(scenario: Scenario, mode: CutMode, caplog: pytest.LogCaptureFixture) -> None:
    """Cut inside the operation's result set: every strategy reruns, one row."""
    scenario.warm_up()
    fault = MidResult(after_packets=10, mode=mode)
    scenario.proxy.arm(fault)
    _rerun_before_commit(scenario, [fault], "SELECT seq", caplog)


@by_strategy
@by_mode
def test_at_packet(scenario: Scenario, mode: CutMode, caplog: pytest.LogCaptureFixture) -> None:
    """Cut at the operation's INSERT (its connection's n-th command): rerun, one row."""
    scenario.warm_up()
    proxy = scenario.proxy
    # The pool is empty and nothing else runs: every command from here on is the
    # attempt's, on the one connection it opens.
    start = proxy.stats().commands
    armed: list[Fault] = []

    def arm_at_insert() -> None:
        armed.append(AtPacket(proxy.stats().commands - start + 1, mode))
        proxy.arm(armed[0])

    scenario.before_insert = arm_at_insert
    _rerun_before_commit(scenario, armed, "INSERT INTO items", caplog)


# 2. A silent network: the attempt ends at its budget, never later.


class HoldingProxy(FaultProxy):
    """A FaultProxy that keeps a blackholed connection open towards the server.

    FaultProxy closes both sides once the client gives up on a blackholed connection,
    so the server soon sees its client vanish and rolls back. On a silent network the
    client's FIN is lost as well: the server keeps the session, its open transaction
    and its locks. Here they stay until the proxy stops.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        super().__init__(upstream_host, upstream_port)
        self._held: list[asyncio.StreamWriter] = []

    async def _release(self, conn: _Conn) -> None:
        if conn.blackholed and conn.server is not None and conn in self._conns:
            self._held.append(conn.server)
            conn.server = None
        await super()._release(conn)

    async def _shutdown(self) -> None:
        await super()._shutdown()
        held, self._held = self._held, []
        for writer in held:
            writer.close()
        for writer in held:
            try:
                await asyncio.wait_for(writer.wait_closed(), 2.0)
            except (TimeoutError, ConnectionError, OSError):
                writer.transport.abort()


@pytest.fixture
def holding_proxy(mariadb: MariaDBServer, database: str) -> Iterator[HoldingProxy]:
    del database  # stopped before the database is dropped: the held sessions end first
    fault_proxy = HoldingProxy(mariadb.host, mariadb.port)
    fault_proxy.start()
    try:
        yield fault_proxy
    finally:
        fault_proxy.stop()


def call_in_thread(
    fn: Callable[[], object], wait: float
) -> tuple[threading.Thread, dict[str, Any]]:
    """Start ``fn`` in a daemon thread and wait up to ``wait`` s; the caller unblocks it."""
    outcome: dict[str, Any] = {}
    started = time.monotonic()

    def target() -> None:
        try:
            outcome["result"] = fn()
        except BaseException as error:
            outcome["error"] = error
        finally:
            outcome["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=target, name="bounded-call", daemon=True)
    thread.start()
    thread.join(wait)
    return thread, outcome


def run_bounded(scenario: Scenario, bound: float) -> tuple[BaseException | None, float]:
    """Run the operation; fail (instead of hanging) if it is still blocked well past ``bound``."""
    thread, outcome = call_in_thread(scenario.run, bound + 5.0)
    if thread.is_alive():
        scenario.proxy.cut_all()  # unblock it
        thread.join(10)
        pytest.fail(f"the call was still blocked {bound + 5.0:.1f} s after it began")
    return outcome.get("error"), outcome["elapsed"]


def upper_bound(policy: RetryPolicy, *, resolution: bool) -> float:
    """The budget, one backoff step (jitter at its largest), the commit-resolution grace."""
    step = policy.backoff(ErrorKind.INTERRUPTED, 1, 0.999)
    return policy.timeout + step + (RESOLUTION_GRACE if resolution else 0.0) + SLACK


def assert_timed_out(error: BaseException | None) -> None:
    """PyMySQL's read bound fired: 2013 "Lost connection ... (timed out)"."""
    assert driver_errno(error) == CR_SERVER_LOST
    assert isinstance(error, OperationalError)
    assert error.orig is not None
    assert "timed out" in str(error.orig.args[1])


@pytest.mark.parametrize("retry_interrupted", [False, True], ids=["default", "interrupted-retried"])
def test_blackhole_mid_operation_ends_at_the_budget(
    make_scenario: Callable[..., Scenario], retry_interrupted: bool
) -> None:
    """A silent link at a statement: 2013 (timed out), interrupted, raised at the budget."""
    policy = BUDGET_POLICY.override(interrupted={"retry": retry_interrupted})
    scenario = make_scenario("default", policy)
    scenario.warm_up()
    scenario.before_insert = lambda: scenario.proxy.arm(Blackhole())
    bound = upper_bound(policy, resolution=False)
    error, elapsed = run_bounded(scenario, bound)
    assert scenario.proxy.wait_fired(0)
    assert policy.timeout - 0.5 <= elapsed <= bound
    assert_timed_out(error)
    assert error is not None
    details = retry_details(error)
    assert details is not None
    assert (details.attempt, details.kind) == (1, ErrorKind.INTERRUPTED)
    # Retryable or not, no budget is left for a second attempt.
    assert details.reason == ("time budget exhausted" if retry_interrupted else "not retryable")
    assert scenario.attempts == [1]
    assert scenario.stored() == []
    assert scenario.counter() == 1


def arm_at_commit(engine: Engine, proxy: FaultProxy, fault: Fault) -> None:
    """Arm ``fault`` once, just before the next COMMIT is sent (the next command)."""

    pending = [fault]

    def before_commit(_connection: Any) -> None:
        if pending:
            proxy.arm(pending.pop())

    event.listen(engine, "commit", before_commit)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_blackhole_at_commit_ends_within_budget_and_grace(
    make_scenario: Callable[..., Scenario],
    holding_proxy: HoldingProxy,
    strategy: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """COMMIT swallowed, server transaction left open: raised by budget + grace, 0 rows."""
    scenario = make_scenario(strategy, BUDGET_POLICY, holding_proxy)
    # The lookup KILLs only on a server up since well before the attempt began (thread
    # ids restart with the server): a session's server may have booted a moment ago.
    wait_uptime(scenario.mariadb, 4.0)
    scenario.warm_up()
    held: list[tuple[int | None, list[tuple[Any, ...]]]] = []
    if strategy == "markers":
        markers = scenario.markers
        lookup = markers.lookup

        def spy(token: str, state: AttemptState, timeout: float) -> bool:
            # What the server holds for the original connection when the lookup starts.
            origin = state.connection
            thread_id = None if origin is None else origin.server_id
            held.append((thread_id, open_transaction(scenario, thread_id)))
            return lookup(token, state, timeout)

        markers.lookup = spy  # type: ignore[method-assign]
    arm_at_commit(scenario.engine, holding_proxy, Blackhole())
    bound = upper_bound(BUDGET_POLICY, resolution=True)
    error, elapsed = run_bounded(scenario, bound)
    assert holding_proxy.wait_fired(0)
    assert BUDGET_POLICY.timeout - 0.5 <= elapsed <= bound
    # The COMMIT read hit the attempt's read bound: interrupted, which is not rerun.
    if strategy == "default":
        assert isinstance(error, CommitOutcomeUnknown), repr(error)
        assert_timed_out(error.__cause__)
    else:
        assert_timed_out(error)
    assert scenario.attempts == [1]
    expected = {
        "default": ("unknown", "none"),
        "idempotent": ("unknown", "none"),
        "verify": ("absent", "verification"),
        "markers": ("absent", "commit marker"),
    }[strategy]
    assert resolutions(caplog) == [expected]
    if strategy == "markers":
        # The lookup began while the original transaction was still open on the server,
        # holding its row locks; the KILL ended it, and the locking read then saw no
        # marker (rolled back first: undo runs backwards). The rest of the rollback may
        # still be finishing when the call returns.
        [(thread_id, trx)] = held
        assert thread_id is not None
        assert trx, "the original transaction was not open any more"
        assert trx[0][0] >= 3  # rows modified: item, counter, marker
        assert not scenario.query(
            "SELECT 1 FROM information_schema.PROCESSLIST WHERE ID = %s", [thread_id]
        )
        # INNODB_TRX is a cache refreshed only when last read over 0.1 s ago: poll slower.
        assert eventually(lambda: not open_transaction(scenario, thread_id), pause=0.25)
        warm_up, _rolled_back = scenario.tokens
        assert scenario.marker_tokens() == {warm_up}
        # Its locks are gone: the counter row can be locked at once.
        scenario.query(
            "SET STATEMENT innodb_lock_wait_timeout = 1 FOR "
            "UPDATE {db}.counter SET n = n WHERE id = 1"
        )
    assert scenario.stored() == []
    assert scenario.counter() == 1


def wait_uptime(mariadb: MariaDBServer, seconds: float) -> None:
    [(_, uptime)] = mariadb.admin("SHOW GLOBAL STATUS LIKE 'Uptime'")
    time.sleep(max(seconds - float(uptime), 0.0))


def open_transaction(scenario: Scenario, thread_id: int | None) -> list[tuple[Any, ...]]:
    return scenario.query(
        "SELECT trx_rows_modified FROM information_schema.INNODB_TRX"
        " WHERE trx_mysql_thread_id = %s",
        [thread_id],
    )


# 3. Bounds that once were missing: connects, pruning, a failed lookup.


@pytest.mark.parametrize("silent_from", ["greeting", "first-command"])
def test_blackhole_while_an_attempt_connects_ends_within_budget(
    make_scenario: Callable[..., Scenario], silent_from: str
) -> None:
    """A link silent while the attempt opens its connection: the call ends at the budget."""
    scenario = make_scenario("default", BUDGET_POLICY)
    scenario.warm_up()  # the pool is empty: the attempt connects
    proxy = scenario.proxy
    if silent_from == "greeting":
        proxy.blackhole_all()  # accepts, never answers (a balancer with no live backend)
    else:
        proxy.arm(Blackhole())  # login passes, then SET NAMES gets no reply
    bound = upper_bound(BUDGET_POLICY, resolution=False)
    thread, outcome = call_in_thread(scenario.run, bound + 0.5)
    stuck = thread.is_alive()
    proxy.restore()
    proxy.cut_all()  # unblock the call either way
    thread.join(10)
    assert not thread.is_alive()
    assert not stuck, f"the call was still blocked {bound + 0.5:.1f} s after it began"
    assert_timed_out(outcome.get("error"))
    assert outcome["elapsed"] <= bound
    assert scenario.stored() == []


def test_blackhole_during_marker_prune_ends_within_budget(
    make_scenario: Callable[..., Scenario],
) -> None:
    """A link silent right after the COMMIT, while markers prune: the call still returns in time."""
    scenario = make_scenario("markers", BUDGET_POLICY)  # a fresh runner: its first commit prunes
    proxy = scenario.proxy
    arm_after_commit: list[Fault] = []

    def on_checkin(*_args: Any) -> None:
        # The attempt's connection goes back to the pool after its COMMIT; the prune's
        # DELETE is the next command through the proxy.
        if arm_after_commit:
            proxy.arm(arm_after_commit.pop())

    event.listen(scenario.engine, "checkin", on_checkin)
    scenario.before_insert = lambda: arm_after_commit.append(Blackhole())
    bound = BUDGET_POLICY.timeout + SLACK
    thread, outcome = call_in_thread(scenario.run, bound + 0.5)
    stuck = thread.is_alive()
    proxy.cut_all()  # unblock: the prune fails (logged), the call returns
    thread.join(10)
    assert not thread.is_alive()
    assert proxy.wait_fired(0)
    assert isinstance(outcome.get("result"), Placed)
    assert scenario.stored() == [outcome["result"]]  # it had committed all along
    assert not stuck, f"the committed call was still blocked {bound + 0.5:.1f} s after it began"
    assert outcome["elapsed"] <= bound


def unknown_origin() -> AttemptState:
    """The state of an attempt whose transaction never got a connection: no origin known."""
    return AttemptState(AttemptInfo("lookup", 1, time.monotonic() + 10), SUPPORT)


def test_failed_marker_lookup_leaves_the_pooled_connection_as_it_was(
    mariadb: MariaDBServer, database: str, make_engine: Callable[..., Engine]
) -> None:
    """A lookup that times out on a lock: the connection returns to the pool unchanged."""
    engine = make_engine(mariadb.url(database))  # direct: no proxy needed
    create_commit_marker_table(engine)
    engine.dispose()
    [(server_default,)] = mariadb.admin("SELECT @@GLOBAL.innodb_lock_wait_timeout")
    # Another transaction holds the marker row (as an original transaction that the KILL
    # cannot end in time would: a long rollback, or a KILL not sent, the origin unknown).
    holder = mariadb._admin_connect(database=database, autocommit=False)
    try:
        with holder.cursor() as cur:
            cur.execute(f"INSERT INTO {MARKER_TABLE} VALUES ('held-token', NOW())")
        with pytest.raises(OperationalError) as caught:
            # No original connection is known: nothing to KILL, only the locking read.
            CommitMarkers(engine, SUPPORT).lookup("held-token", unknown_origin(), timeout=1.0)
        assert driver_errno(caught.value) == 1205
    finally:
        holder.rollback()
        holder.close()
    assert engine.pool.checkedin() == 1  # type: ignore[attr-defined]
    with engine.connect() as connection:  # the lookup's connection, from the pool
        value = connection.exec_driver_sql("SELECT @@SESSION.innodb_lock_wait_timeout").scalar_one()
    assert value == server_default
