"""The default policy rides out an ordinary restart: nothing given up, nothing lost or doubled."""

from __future__ import annotations

import functools
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.integration.helpers import Recorder, Threads, make_runner
from tests.integration.model import Task
from uow import CommitOutcomeUnknown, ErrorKind, RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Engine

    from servers.mariadb import MariaDBServer
    from tests.integration.helpers import Database

pytestmark = pytest.mark.integration

WRITERS = 12
DOWNTIME = 10.0


def test_default_policy_outlasts_a_kill_and_ten_seconds_of_downtime(
    private_mariadb: MariaDBServer,
    private_db: Database,
    make_engine: Callable[..., Engine],
) -> None:
    """12 writers, kill -9, 10 s down, restart: every operation that returned is there once."""
    assert RetryPolicy() == RetryPolicy.model_validate({})  # truly the defaults
    recorder = Recorder()
    units = make_runner(make_engine(private_db.url), RetryPolicy(), recorder)
    stop = threading.Event()
    returned: dict[str, list[str]] = {}
    unknown: dict[str, list[str]] = {}
    failed: dict[str, list[BaseException]] = {}

    def create(uow: Any, name: str) -> None:
        uow.tasks.add(Task(name=name))

    def writer(key: str) -> None:
        returned[key], unknown[key], failed[key] = [], [], []
        n = 0
        while not stop.is_set():
            name = f"{key}-{n}"
            n += 1
            try:
                units.run(create, name)
            except CommitOutcomeUnknown:
                unknown[key].append(name)  # reported to the caller: may be there 0 or 1 times
            except Exception as error:
                failed[key].append(error)
            else:
                returned[key].append(name)

    writers = Threads()
    for i in range(WRITERS):
        writers.start(f"w{i:02d}", functools.partial(writer, f"w{i:02d}"))
    time.sleep(1.0)
    private_mariadb.kill()
    killed_at = time.monotonic()
    time.sleep(DOWNTIME)
    private_mariadb.start()
    back_at = time.monotonic()
    time.sleep(3.0)  # writers that waited find the server back, then keep writing a while
    stop.set()
    writers.join(timeout=60)
    assert writers.errors == {}

    names = [name for (name,) in private_db.query("SELECT name FROM {db}.tasks")]
    counts = {name: names.count(name) for name in names}
    written = [name for names_ in returned.values() for name in names_]
    assert all(errors == [] for errors in failed.values()), failed  # nothing given up
    assert [name for name in written if counts.get(name) != 1] == []  # once each, none lost
    assert all(counts.get(name, 0) <= 1 for names_ in unknown.values() for name in names_)
    assert sum(counts.values()) == len(counts)  # no duplicates at all
    retried = [r for r in recorder.records if r.will_retry]
    assert {r.kind for r in retried} <= {ErrorKind.DISCONNECT, ErrorKind.UNAVAILABLE}
    assert max(r.elapsed for r in retried) >= DOWNTIME - 1.0  # some waited out the outage
    assert back_at - killed_at >= DOWNTIME
