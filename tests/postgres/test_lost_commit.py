"""Lost COMMITs through the PostgreSQL fault proxy: settled by transaction id or by marker.

The proxy cuts the connection before the COMMIT reaches the server, after the server
committed but before its reply reaches the client (FIN, RST, or half-open: the server
keeps the session), and at every single message an operation sends. Whatever the
cut, an operation that returns is stored exactly once; without a way to settle a lost
COMMIT, the runner refuses to guess (CommitOutcomeUnknown) and never writes twice.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest

from adapters.postgresql import settle_lost_commits
from servers.pg_proxy import AfterCommitReply, AtMessage, BeforeCommit, CutMode, FaultProxy
from tests.postgres.conftest import ALL_DRIVERS, place
from uow import CommitOutcomeUnknown, retry_details

if TYPE_CHECKING:
    from collections.abc import Iterator

    from servers.postgres import PostgresServer
    from tests.postgres.conftest import Database, Flavour, Recorder

pytestmark = pytest.mark.postgres

CUT_MODES = pytest.mark.parametrize("mode", list(CutMode), ids=lambda m: m.value)
SETTLE = pytest.mark.parametrize("settle", ["xid", "markers"])


@pytest.fixture
def proxy(postgres: PostgresServer, db: Database) -> Iterator[FaultProxy]:
    """A fault proxy in front of the shared server; stopped before the database is dropped."""
    del db  # only orders the teardown: the proxy's connections end first
    with FaultProxy(postgres.host, postgres.port) as fault_proxy:
        yield fault_proxy


class Outcomes(logging.Handler):
    """Collects the lost-COMMIT resolutions the library logs (committed, absent, unknown)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        outcome = getattr(record, "uow_commit_outcome", None)
        if outcome is not None:
            self.seen.append(str(outcome))


@pytest.fixture
def outcomes() -> Iterator[Outcomes]:
    handler = Outcomes()
    logger = logging.getLogger("retrying_uow")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def runner_through(
    flavour: Flavour, db: Database, proxy: FaultProxy, settle: str, **options: Any
) -> Any:
    engine = flavour.engine(db.url(flavour.driver, host=proxy.host, port=proxy.port))
    if settle == "xid":
        settle_lost_commits(engine)
    elif settle == "markers":
        db.create_marker_table()
    return flavour.runner(engine, commit_markers=settle == "markers", **options)


@ALL_DRIVERS
@SETTLE
@CUT_MODES
@pytest.mark.parametrize("cut", ["before", "after"])
def test_lost_commit_is_settled(  # noqa: PLR0917 -- fixtures and parameters
    db: Database,
    flavour: Flavour,
    proxy: FaultProxy,
    outcomes: Outcomes,
    settle: str,
    mode: CutMode,
    cut: str,
) -> None:
    """Cut at COMMIT: rerun if it never reached the server, returned if it committed; once."""
    runner = runner_through(flavour, db, proxy, settle)
    flavour.run(runner, place, "warm-up")  # first-connect queries done, markers pruned
    proxy.arm(BeforeCommit(mode) if cut == "before" else AfterCommitReply(mode))

    attempt = flavour.run(runner, place, "lost")

    assert proxy.wait_fired(5)
    assert attempt == (2 if cut == "before" else 1)
    assert outcomes.seen == (["absent"] if cut == "before" else ["committed"])
    assert db.entries() == {"warm-up": 1, "lost": 1}
    assert db.counter() == 2
    if settle == "markers":
        assert db.markers() == 2
    # A half-open session was ended by the settling (its backend is gone); the rerun
    # was not blocked by its row lock.
    [(sessions,)] = db.query(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' "
        "AND datname = %s",
        [db.name],
    )
    assert sessions == 0


@pytest.mark.parametrize("cut", ["before", "after"])
def test_without_a_way_to_settle_the_runner_refuses_to_guess(
    db: Database, flavour: Flavour, proxy: FaultProxy, outcomes: Outcomes, cut: str
) -> None:
    """No markers, no transaction ids: CommitOutcomeUnknown, the row there or not, never twice."""
    runner = runner_through(flavour, db, proxy, "none")
    flavour.run(runner, place, "warm-up")
    proxy.arm(BeforeCommit() if cut == "before" else AfterCommitReply())

    with pytest.raises(CommitOutcomeUnknown) as raised:
        flavour.run(runner, place, "lost")

    details = retry_details(raised.value)
    assert details is not None
    assert details.attempt == 1
    assert outcomes.seen == ["unknown"]
    assert db.entries() == ({"warm-up": 1} if cut == "before" else {"warm-up": 1, "lost": 1})


@pytest.mark.parametrize("settle", ["xid", "markers"])
def test_a_cut_at_every_message_of_an_operation(
    db: Database, flavour: Flavour, proxy: FaultProxy, recorder: Recorder, settle: str
) -> None:
    """A cut at each message in turn (password, Parse, Bind, Execute, Sync, Query): each once."""
    runner = runner_through(flavour, db, proxy, settle, hooks=[recorder])
    engine = runner.backend.engine
    flavour.run(runner, place, "warm-up")
    flavour.await_(engine.dispose())  # each operation below starts on a new connection
    before = proxy.stats()
    flavour.run(runner, place, "clean")
    after = proxy.stats()
    sent = after.client_messages - before.client_messages
    by_type = {  # the pool's Terminate ("X") of the disposed connection may count late
        kind: n - before.messages_by_type.get(kind, 0)
        for kind, n in after.messages_by_type.items()
        if n - before.messages_by_type.get(kind, 0) and kind != "X"
    }
    assert by_type.keys() >= {"p", "Q"}  # authentication, simple queries (BEGIN, COMMIT)
    assert by_type.keys() & {"P", "B", "E", "S"}  # and the extended protocol
    typed = sum(by_type.values())
    assert typed <= sent

    keys = []
    for n in range(1, typed + 1):
        flavour.await_(engine.dispose())
        proxy.arm(AtMessage(None, n))
        key = f"cut-{n:02d}"
        keys.append(key)
        flavour.run(runner, place, key)
        assert proxy.wait_fired(5), f"message {n} of {typed} was never cut"

    expected = {"warm-up": 1, "clean": 1} | dict.fromkeys(keys, 1)
    assert db.entries() == expected
    assert db.counter() == len(expected)
    assert len(recorder.records) >= typed  # each cut cost (at least) one rerun
    print(f"{flavour.driver}/{settle}: {typed} messages cut one by one: {by_type}")  # noqa: T201
