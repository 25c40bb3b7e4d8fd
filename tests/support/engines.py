"""Engines for tests: made like a user would, all disposed when the test ends."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adapters.sqlalchemy import create_engine

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from sqlalchemy.engine import Engine


def lean_engines(connect_args: Mapping[str, Any]) -> Iterator[Callable[..., Engine]]:
    """Yield a maker of ``adapters.sqlalchemy.create_engine`` engines, then dispose them all.

    ``connect_args`` is the default for every engine; a test may pass its own.
    """
    engines: list[Engine] = []

    def make(url: str, **kwargs: Any) -> Engine:
        kwargs.setdefault("connect_args", dict(connect_args))
        engine = create_engine(url, **kwargs)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()
