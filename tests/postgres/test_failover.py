"""Failover: the primary is killed, its streaming standby promoted; writers carry on.

Writers use a libpq multi-host URL with ``target_session_attrs=read-write``, so every
new connection goes to whichever server takes writes. Replication is synchronous
(``synchronous_standby_names = '*'`` on the primary only), so every COMMIT that
returned is on the standby when the primary dies. One more writer is misrouted (the
standby first, ``target_session_attrs=any``: a DNS name or virtual IP moved before the
promotion finished): its writes meet 25006 on the standby and are rerun until it is
promoted.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
from sqlalchemy import text

from adapters.postgresql import settle_lost_commits
from tests.postgres.conftest import Database, place, with_schema
from uow import CommitOutcomeUnknown, ErrorKind, RetryDetails, RetryPolicy

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from servers.postgres import PostgresServer
    from tests.postgres.conftest import Flavour

pytestmark = pytest.mark.postgres

WRITERS = 4
WARM_UP_WRITES = 20
AFTER_FIRST_WRITE = 2.0
"""Seconds the writers go on after the first write on the new primary."""
POLICY = RetryPolicy(timeout=30, wait_initial=0.01, wait_max=0.2, retry_budget=None)


def multi_host_url(driver: str, database: str, password: str, ports: list[int], attrs: str) -> str:
    hosts = "&".join(f"host=127.0.0.1:{port}" for port in ports)
    return (
        f"postgresql+{driver}://app:{quote(password, safe='')}@/{database}"
        f"?{hosts}&target_session_attrs={attrs}"
    )


@dataclass
class Call:
    key: str
    started: float
    ended: float
    error: str = ""
    port: int = 0
    """The port of the server the write committed on."""


def place_somewhere(session: Session, uow: Any, key: str) -> int:
    """Place the entry; return the port of the server that took it."""
    place(session, uow, key)
    port: int = session.execute(text("SELECT inet_server_port()")).scalar_one()
    return port


@dataclass
class Run:
    """What the writers did, and when the failover happened."""

    calls: list[Call] = field(default_factory=list)
    records: list[RetryDetails] = field(default_factory=list)
    misrouted: list[RetryDetails] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    killed: float = 0.0
    promoted: float = 0.0
    new_primary: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, call: Call) -> None:
        with self.lock:
            self.calls.append(call)

    def returned(self) -> list[Call]:
        return [call for call in self.calls if not call.error]

    def first_write_after_kill(self) -> float | None:
        """Seconds from the kill to the first write the new primary took."""
        after = [c.ended for c in self.returned() if c.port == self.new_primary]
        return min(after) - self.killed if after and self.killed else None


def _fail_over(primary: PostgresServer, standby: PostgresServer, run: Run) -> None:
    """Kill the primary once the writers are warm, promote the standby, stop the writers."""
    deadline = time.monotonic() + 60
    while len(run.returned()) < WARM_UP_WRITES and time.monotonic() < deadline:
        time.sleep(0.01)
    run.killed = time.monotonic()
    primary.kill()
    standby.promote()
    run.promoted = time.monotonic()
    while run.first_write_after_kill() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(AFTER_FIRST_WRITE)
    run.stop.set()


def _write_sync(flavour: Flavour, runner: Any, prefix: str, run: Run) -> None:
    operation = flavour.operation(place_somewhere)
    number = 0
    while not run.stop.is_set():
        number += 1
        key = f"{prefix}-{number:05d}"
        started = time.monotonic()
        try:
            port = runner.run(operation, key)
        except Exception as error:
            run.note(Call(key, started, time.monotonic(), type(error).__name__))
        else:
            run.note(Call(key, started, time.monotonic(), port=port))


async def _write_async(flavour: Flavour, runner: Any, prefix: str, run: Run) -> None:
    operation = flavour.operation(place_somewhere)
    number = 0
    while not run.stop.is_set():
        number += 1
        key = f"{prefix}-{number:05d}"
        started = time.monotonic()
        try:
            port = await runner.run(operation, key)
        except Exception as error:
            run.note(Call(key, started, time.monotonic(), type(error).__name__))
        else:
            run.note(Call(key, started, time.monotonic(), port=port))


def _synchronous_standby(primary: PostgresServer) -> PostgresServer:
    """Start a streaming standby and make the primary's COMMITs wait for it."""
    standby = primary.make_standby()
    standby.wait_streaming()
    # ALTER SYSTEM after the base backup: the standby, once promoted, waits for nobody.
    primary.admin("ALTER SYSTEM SET synchronous_standby_names = '*'")
    primary.admin("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 30
    while primary.admin("SELECT sync_state FROM pg_stat_replication") != [("sync",)]:
        assert time.monotonic() < deadline, "the standby never became synchronous"
        time.sleep(0.05)
    return standby


def _figures(run: Run) -> str:
    failed = [call for call in run.calls if call.error]
    unknown = [call for call in failed if call.error == CommitOutcomeUnknown.__name__]
    first_write = run.first_write_after_kill()
    retried = sorted({r.kind.value for r in run.records if r.will_retry})
    misrouted = sorted({r.kind.value for r in run.misrouted})
    return (
        f"{len(run.returned())} writes returned, {len(failed)} failed, {len(unknown)} of them "
        f"CommitOutcomeUnknown; promotion done {run.promoted - run.killed:.3f} s after the kill, "
        f"first write on the new primary {first_write or float('nan'):.3f} s after it; "
        f"retried: {retried}; misrouted writer retried {len(run.misrouted)} times ({misrouted})"
    )


@pytest.mark.parametrize("settle", ["xid", "markers"])
def test_writers_reach_the_promoted_standby_and_nothing_is_lost_or_doubled(
    private_postgres: PostgresServer, flavour: Flavour, settle: str
) -> None:
    """Kill, promote: every write that returned is on the new primary exactly once."""
    primary = private_postgres
    name = primary.create_database(f"t_{uuid.uuid4().hex[:12]}")
    db = with_schema(primary, name)
    if settle == "markers":
        db.create_marker_table()
    standby = _synchronous_standby(primary)
    run = Run(new_primary=standby.port)
    ports = [primary.port, standby.port]
    url = multi_host_url(flavour.driver, name, primary.password, ports, "read-write")
    engine = flavour.engine(url, pool_size=WRITERS)
    misrouted_url = multi_host_url(flavour.driver, name, primary.password, ports[::-1], "any")
    misrouted_engine = flavour.engine(misrouted_url, pool_size=1)
    for each in (engine, misrouted_engine):
        if settle == "xid":
            settle_lost_commits(each)
    markers = settle == "markers"
    runner = flavour.runner(
        engine, policy=POLICY, hooks=[run.records.append], commit_markers=markers
    )
    misrouted = flavour.runner(
        misrouted_engine, policy=POLICY, hooks=[run.misrouted.append], commit_markers=markers
    )
    orchestrator = threading.Thread(target=_fail_over, args=(primary, standby, run), daemon=True)
    orchestrator.start()
    writers = [(runner, f"w{n}") for n in range(WRITERS)] + [(misrouted, "misrouted")]
    if flavour.is_async:

        async def write_all() -> None:
            await asyncio.gather(*(_write_async(flavour, r, p, run) for r, p in writers))

        flavour.loop.run_until_complete(write_all())
    else:
        threads = [
            threading.Thread(target=_write_sync, args=(flavour, r, p, run), daemon=True)
            for r, p in writers
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    orchestrator.join(60)

    new_primary = Database(standby, name)
    stored = new_primary.entries()
    returned = run.returned()
    failed = [call for call in run.calls if call.error]
    first_write = run.first_write_after_kill()
    print(f"\n{flavour.driver}/{settle}: {_figures(run)}")  # noqa: T201 -- shown with -s

    assert first_write is not None
    assert first_write < 20
    assert not [call for call in failed if call.error != CommitOutcomeUnknown.__name__], failed
    assert [call.key for call in returned if stored.get(call.key) != 1] == []
    assert [key for key, count in stored.items() if count > 1] == []
    assert new_primary.counter() == sum(stored.values())
    # Writes that went to the standby before its promotion were refused (25006) and rerun.
    assert ErrorKind.FAILOVER in {record.kind for record in run.misrouted}
    assert any(call.key.startswith("misrouted") for call in returned)
    retried = {r.kind for r in run.records if not isinstance(r.error, CommitOutcomeUnknown)}
    assert retried <= {ErrorKind.DISCONNECT, ErrorKind.UNAVAILABLE, ErrorKind.FAILOVER}
