"""Engines: which database support serves one, and engines lean for units of work.

A lean engine is made as SQLAlchemy makes it, without the round trips a unit of work makes
redundant.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.ext import asyncio as sqlalchemy_asyncio

from adapters.sqlalchemy._databases import KEY, ConnectionState
from adapters.sqlalchemy._generic import GENERIC

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect, Engine
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.pool import PoolResetState

    from adapters.sqlalchemy._databases import DatabaseSupport


_SUPPORT_MODULES = {
    "mysql": "adapters.mysql",
    "mariadb": "adapters.mysql",
    "postgresql": "adapters.postgresql",
}
"""SQLAlchemy dialect name -> the package whose ``SUPPORT`` serves it."""


def support_for(dialect: Dialect) -> DatabaseSupport:
    """Return the support of a dialect's database (generic when it has no package)."""
    module = _SUPPORT_MODULES.get(dialect.name)
    if module is None:
        return GENERIC
    support: DatabaseSupport = importlib.import_module(module).SUPPORT
    return support


def create_engine(url: str | sqlalchemy.URL, **kwargs: Any) -> Engine:
    """Create an Engine as `sqlalchemy.create_engine` does, lean for units of work.

    The pool's reset-on-return is replaced by one that skips the ROLLBACK when an
    attempt has just committed or rolled back the connection's transaction (and the
    driver does not say one is open), saving a round trip per operation; any other
    connection is rolled back as usual. The database may add more (with PyMySQL and no
    TLS option of yours, its default TLS context is built once, not on every connect:
    reconnecting after a failover takes about a millisecond instead of tens).
    ``pool_pre_ping`` is not needed: a stale connection fails the attempt, and the
    operation is rerun.
    """
    custom_reset = "pool_reset_on_return" in kwargs
    if not custom_reset:
        kwargs["pool_reset_on_return"] = None
    engine = sqlalchemy.create_engine(url, **kwargs)
    _make_lean(engine, kwargs, reset=not custom_reset)
    return engine


def create_async_engine(url: str | sqlalchemy.URL, **kwargs: Any) -> AsyncEngine:
    """Create an AsyncEngine as SQLAlchemy's ``create_async_engine`` does, lean for units of work.

    The async twin of [`create_engine`][adapters.sqlalchemy.create_engine]: the same reset
    on return, on the AsyncEngine's sync side (an async operation's one-row write is then
    two statements, INSERT and COMMIT).
    """
    custom_reset = "pool_reset_on_return" in kwargs
    if not custom_reset:
        kwargs["pool_reset_on_return"] = None
    engine = sqlalchemy_asyncio.create_async_engine(url, **kwargs)
    _make_lean(engine.sync_engine, kwargs, reset=not custom_reset)
    return engine


def _make_lean(engine: Engine, kwargs: dict[str, Any], *, reset: bool) -> None:
    support = support_for(engine.dialect)
    if reset:

        def reset_on_return(
            dbapi_connection: Any, record: Any, reset_state: PoolResetState
        ) -> None:
            if reset_state.terminate_only or not reset_state.asyncio_safe:
                return  # being closed, or garbage collected outside the event loop
            state = record.info.get(KEY)
            clean = isinstance(state, ConnectionState) and state.clean
            if isinstance(state, ConnectionState):
                state.clean = False  # for this check-in only
            if clean and not support.in_transaction(dbapi_connection):
                return
            dbapi_connection.rollback()

        event.listen(engine, "reset", reset_on_return)
    if "creator" not in kwargs and "async_creator" not in kwargs:
        support.lean(engine, dict(kwargs.get("connect_args", {})))
