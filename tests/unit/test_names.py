"""Operation names: qualified names only, so bound arguments never reach a log line or a note."""

from __future__ import annotations

import functools
import logging
from typing import Any

import pytest

from adapters.memory import SimulatedError
from tests.unit.conftest import CAPPED, LOGGER, Task, make_runner
from uow import CommitOutcomeUnknown, RetryDetails
from uow._names import operation_name
from uow.testing import Fault, inject

CARD = "4111 1111 1111 1111"
PASSWORD = "hunter2-secret"  # noqa: S105 -- a fake credential the test hunts for


def charge(card: str, uow: Any) -> None:
    """An operation whose argument, bound first by a partial, must never be logged."""
    uow.tasks.all()
    uow.tasks.add(Task(name=f"charged {card[-4:]}"))


class Charger:
    """A callable object whose repr holds a credential."""

    def __init__(self, password: str) -> None:
        self.password = password

    def __repr__(self) -> str:
        return f"Charger(password={self.password!r})"

    __str__ = __repr__

    def __call__(self, uow: Any) -> None:
        uow.tasks.all()
        uow.tasks.add(Task(name="charged"))


CASES = [
    (functools.partial(charge, CARD), "charge", CARD),
    (functools.partial(functools.partial(charge, CARD)), "charge", CARD),
    (Charger(PASSWORD), "Charger", PASSWORD),
]
IDS = ["partial", "nested partial", "callable object"]


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    """Each record's message and every attribute it carries, as text."""
    return "\n".join(f"{r.getMessage()} {vars(r)!r}" for r in caplog.records if r.name == LOGGER)


@pytest.mark.usefixtures("instant")
@pytest.mark.parametrize(("operation", "name", "secret"), CASES, ids=IDS)
def test_retry_and_give_up_never_show_bound_arguments(
    operation: Any, name: str, secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    """WARNING and ERROR lines, hook records and the note name the operation, not its arguments."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    seen: list[RetryDetails] = []
    runner = make_runner(CAPPED.override(attempts=2), hooks=[seen.append])
    with pytest.raises(SimulatedError) as excinfo, inject(Fault.disconnect(at=1, times=2)):
        runner.run(operation)
    logged = everything_logged(caplog)
    assert f"retrying {name}: attempt 1/2" in logged
    assert f"giving up on {name}: attempt 2/2" in logged
    assert [d.operation for d in seen] == [name, name]
    (note,) = excinfo.value.__notes__
    assert f"operation {name!r} gave up" in note
    for text in (logged, note, repr(seen)):
        assert secret not in text


@pytest.mark.usefixtures("instant")
@pytest.mark.parametrize(("operation", "name", "secret"), CASES, ids=IDS)
def test_lost_commit_never_shows_bound_arguments(
    operation: Any, name: str, secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    """CommitOutcomeUnknown and the resolution log line name the operation only."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    with pytest.raises(CommitOutcomeUnknown) as excinfo, inject(Fault.lost_commit(committed=True)):
        make_runner().run(operation)
    assert excinfo.value.operation == name
    assert f"lost COMMIT of {name} attempt 1" in everything_logged(caplog)
    assert secret not in str(excinfo.value)
    assert secret not in everything_logged(caplog)


@pytest.mark.usefixtures("instant")
def test_unit_of_work_and_injection_points_use_the_name() -> None:
    """What the attempt is told (and what a closed unit of work says) holds no argument."""
    runner = make_runner()

    def keep(uow: Any, card: str) -> Any:
        del card
        return uow

    with inject(Fault.disconnect(at=1)) as injection:
        runner.run(functools.partial(charge, CARD))
    kept = runner.run(functools.partial(keep, card=CARD))
    assert {point.operation for point in injection.points} == {"charge"}
    assert (
        kept.attempt.operation
        == "test_unit_of_work_and_injection_points_use_the_name.<locals>.keep"
    )
    assert CARD not in repr(kept)


def test_operation_name_uses_qualified_names_only() -> None:
    """Functions, methods, partials, callable objects and lambdas get their qualified names."""

    class Service:
        def create(self, uow: Any) -> None: ...

        @staticmethod
        def helper(uow: Any) -> None: ...

    assert operation_name(charge) == "charge"
    assert operation_name(functools.partial(charge, CARD)) == "charge"
    assert operation_name(Charger(PASSWORD)) == "Charger"
    assert operation_name(Service().create) == (
        "test_operation_name_uses_qualified_names_only.<locals>.Service.create"
    )
    assert operation_name(Service.helper).endswith("Service.helper")
    assert operation_name(lambda uow: uow).endswith("<locals>.<lambda>")
