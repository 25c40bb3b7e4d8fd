"""A COMMIT lost on the wire, on every driver, through the fault proxy.

The proxy drops the COMMIT before the server sees it (not committed), or forwards it and
swallows the server's OK (committed). Every driver reports both as the same lost
connection; commit markers tell them apart, and without them the caller is told the
outcome is unknown. Either way nothing is written twice and nothing committed is lost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from servers.mysql_proxy import AfterCommitReply, BeforeCommit, FaultProxy
from tests.drivers.conftest import bump, insert_item
from uow import CommitOutcomeUnknown, ErrorKind

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy.orm import Session

    from tests.drivers.conftest import Database, DriverCase, Units

pytestmark = [pytest.mark.integration, pytest.mark.drivers, pytest.mark.chaos]

CR_SERVER_LOST = 2013
FIRED_TIMEOUT = 5.0


@pytest.fixture
def proxy(db: Database) -> Iterator[FaultProxy]:
    """A fault proxy in front of the test's server, stopped before its database is dropped."""
    with FaultProxy(db.server.host, db.server.port) as fault_proxy:
        yield fault_proxy


def place(attempt: int, session: Session) -> int:
    insert_item(session, "placed", attempt)
    return attempt


def prepared_units(
    driver: DriverCase,
    db: Database,
    proxy: FaultProxy,
    make_units: Callable[..., Units],
    *,
    markers: bool,
) -> Units:
    """A runner through the proxy, warmed up: the dialect's set-up and first prune are done."""
    units = make_units(db.url(driver, port=proxy.port), commit_markers=markers)
    units.run(lambda _attempt, session: bump(session, "b"))
    units.attempts.clear()
    return units


@pytest.mark.parametrize("markers", [True, False], ids=["markers", "no-markers"])
def test_commit_dropped_before_the_server(
    driver: DriverCase,
    db: Database,
    proxy: FaultProxy,
    make_units: Callable[..., Units],
    markers: bool,
) -> None:
    """Not committed: with markers the operation is rerun once; without, CommitOutcomeUnknown."""
    units = prepared_units(driver, db, proxy, make_units, markers=markers)
    proxy.arm(BeforeCommit())

    if markers:
        assert units.run(place) == 2
        assert db.items() == [("placed", 2)]
        assert units.attempts == [1, 2]
        [record] = units.records
        assert (record.kind, record.errno, record.will_retry) == (
            ErrorKind.DISCONNECT,
            CR_SERVER_LOST,
            True,
        )
    else:
        with pytest.raises(CommitOutcomeUnknown) as caught:
            units.run(place)
        assert caught.value.attempt == 1
        assert units.attempts == [1]
        assert db.items() == []
    assert proxy.wait_fired(FIRED_TIMEOUT)


@pytest.mark.parametrize("markers", [True, False], ids=["markers", "no-markers"])
def test_commit_reply_lost_after_the_server_committed(
    driver: DriverCase,
    db: Database,
    proxy: FaultProxy,
    make_units: Callable[..., Units],
    markers: bool,
) -> None:
    """Committed: with markers attempt 1's result comes back, one row; without, unknown."""
    units = prepared_units(driver, db, proxy, make_units, markers=markers)
    proxy.arm(AfterCommitReply())

    if markers:
        assert units.run(place) == 1
        assert units.records == []
    else:
        with pytest.raises(CommitOutcomeUnknown) as caught:
            units.run(place)
        assert caught.value.attempt == 1
    assert units.attempts == [1]
    assert db.items() == [("placed", 1)]
    assert proxy.wait_fired(FIRED_TIMEOUT)
