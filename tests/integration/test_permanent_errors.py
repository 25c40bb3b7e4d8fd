"""Permanent errors: raised at once and unchanged, nothing written, no secret leaked."""

from __future__ import annotations

import logging
import time
import traceback
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError

from servers.mariadb import MariaDBServer
from tests.integration.helpers import FAST_POLICY, make_runner
from tests.integration.model import Task
from uow import ErrorKind, retry_details

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Engine

    from tests.integration.helpers import Database, Recorder

pytestmark = pytest.mark.integration

ER_DUP_ENTRY = 1062
ER_ACCESS_DENIED_ERROR = 1045


def test_duplicate_key_is_not_retried_raised_unchanged_and_nothing_written(
    db: Database, make_engine: Callable[..., Engine], recorder: Recorder
) -> None:
    """A duplicate key raises IntegrityError 1062 after 1 attempt; the earlier insert is gone."""
    db.query("INSERT INTO {db}.tasks (name) VALUES ('taken')")
    engine = make_engine(db.url)
    runner = make_runner(engine, FAST_POLICY, recorder)
    attempts: list[int] = []

    def create_two(uow: Any) -> None:
        attempts.append(uow.attempt.number)
        uow.tasks.add(Task(name="first"))
        uow.session.flush()  # on the server, inside the transaction
        uow.tasks.add(Task(name="taken"))  # the final flush hits the unique key

    with pytest.raises(IntegrityError) as caught:
        runner.run(create_two)

    error = caught.value
    assert type(error) is IntegrityError  # the driver's error, not wrapped
    assert error.orig is not None
    assert error.orig.args[0] == ER_DUP_ENTRY
    assert attempts == [1]
    details = retry_details(error)
    assert details is not None
    assert (details.attempt, details.kind, details.errno) == (1, ErrorKind.PERMANENT, ER_DUP_ENTRY)
    assert not details.will_retry
    assert details.reason == "not retryable"
    assert recorder.retries == []
    assert db.task_names() == ["taken"]  # "first" was rolled back with the attempt


def test_wrong_password_fails_at_once_without_leaking_it(
    db: Database,
    make_engine: Callable[..., Engine],
    recorder: Recorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A wrong password raises 1045 after 1 attempt and shows in no error, log record or repr."""
    caplog.set_level(logging.DEBUG)  # every logger at DEBUG, before the engine exists
    caplog.set_level(logging.DEBUG, logger="sqlalchemy")  # SQLAlchemy's own default is WARNING
    secret = f"Wrong-{uuid.uuid4().hex}"
    url = make_url(db.url).set(password=secret)
    engine = make_engine(url)
    runner = make_runner(engine, FAST_POLICY, recorder)
    attempts: list[int] = []

    def create(uow: Any, name: str) -> None:
        attempts.append(uow.attempt.number)
        uow.tasks.add(Task(name=name))

    started = time.monotonic()
    with pytest.raises(OperationalError) as caught:
        runner.run(create, "never")
    elapsed = time.monotonic() - started

    error = caught.value
    assert error.orig is not None
    assert error.orig.args[0] == ER_ACCESS_DENIED_ERROR
    assert attempts == [1]
    assert elapsed < 2.0  # no backoff, no second attempt
    details = retry_details(error)
    assert details is not None
    assert (details.attempt, details.kind, details.errno) == (
        1,
        ErrorKind.PERMANENT,
        ER_ACCESS_DENIED_ERROR,
    )
    assert recorder.retries == []
    texts = [
        str(error),
        repr(error),
        str(error.orig),
        repr(error.orig),
        "".join(traceback.format_exception(error)),
        repr(details),
        repr(runner),
        repr(engine),
    ]
    assert any("Access denied" in record.getMessage() for record in caplog.records)
    for record in caplog.records:
        texts += [record.getMessage(), str(record.exc_text), repr(record.__dict__)]
    for text in texts:
        assert secret not in text
        assert MariaDBServer.password not in text
    assert db.task_names() == []
