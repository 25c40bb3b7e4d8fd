"""``adapters.endpoints`` without a cluster: how endpoints are spelt, ordered and rested."""

from __future__ import annotations

import logging

import pytest

from adapters.endpoints import Endpoint, Endpoints
from tests.unit.conftest import LOGGER


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_endpoints_parse_every_spelling() -> None:
    """Host, host:port, (host, port) and Endpoint all give an Endpoint."""
    given: list[str | tuple[str, int] | Endpoint] = [
        "db1",
        "db2:3307",
        ("db3", 3308),
        Endpoint("db4", 3309),
    ]
    assert Endpoints(given).endpoints == (
        Endpoint("db1", 3306),
        Endpoint("db2", 3307),
        Endpoint("db3", 3308),
        Endpoint("db4", 3309),
    )
    with pytest.raises(ValueError, match="at least one"):
        Endpoints([])
    with pytest.raises(ValueError, match="rest"):
        Endpoints(["db1"], rest=-1)


def test_a_failed_endpoint_rests_then_comes_back_first() -> None:
    """A failed endpoint goes last for ``rest`` seconds, then back to its place."""
    clock = Clock()
    endpoints = Endpoints(["a:1", "b:2", "c:3"], rest=10, clock=clock)
    a, b, c = endpoints.endpoints
    endpoints.mark_failed(a, "test")
    assert endpoints.order() == [b, c, a]
    assert endpoints.resting() == [a]
    clock.now += 5
    endpoints.mark_failed(b, "test")
    assert endpoints.order() == [c, a, b]  # all resting but c; a's rest ends first
    clock.now += 5.01
    assert endpoints.order() == [a, c, b]
    assert endpoints.resting() == [b]


def test_when_every_endpoint_rests_the_first_to_recover_is_tried_first() -> None:
    """Never no answer: with all resting, the order is by the end of their rest."""
    clock = Clock()
    endpoints = Endpoints(["a", "b"], rest=10, clock=clock)
    a, b = endpoints.endpoints
    endpoints.mark_failed(b)
    clock.now += 1
    endpoints.mark_failed(a)
    assert endpoints.order() == [b, a]
    assert endpoints.resting() == [a, b]


def test_a_rest_is_logged_without_the_error_text(caplog: pytest.LogCaptureFixture) -> None:
    """Marking an endpoint failed logs it at INFO, with the error's code, not a long message."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    endpoints = Endpoints(["db1:3306"], rest=2.5)
    endpoints.mark_failed(endpoints.endpoints[0], ConnectionRefusedError(111, "refused", "x"))
    (record,) = [r for r in caplog.records if r.name == LOGGER]
    assert record.getMessage() == "endpoint db1:3306 rests for 2.5 s ((111, 'refused'))"


def test_endpoints_read_well() -> None:
    """Endpoint prints as host:port and Endpoints lists them with the rest period."""
    endpoints = Endpoints(["db1", "db2:3307"], rest=3)
    assert str(endpoints.endpoints[1]) == "db2:3307"
    assert repr(endpoints) == "Endpoints([db1:3306, db2:3307], rest=3)"
