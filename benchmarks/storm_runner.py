"""Every use of the library by the storm harness and the TLS benchmark, in one place.

The library's construction API is still changing: when it does, this module is the
only one to adapt. The rest of the harness sees plain callables and tuples, never
the library's own types.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy.dialects.mysql.pymysql import MySQLDialect_pymysql

from adapters.mysql import connect_sharing_tls_context
from adapters.sqlalchemy import SqlAlchemyUnitOfWork, create_engine
from uow import RetryDetails, RetryPolicy, retry_details

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Engine
    from sqlalchemy.sql.dml import Insert

FailedAttempt = tuple[float, str, int | None, bool, str]
"""``(time.monotonic(), kind, errno, will_retry, reason)`` of one failed attempt."""

_PYMYSQL = MySQLDialect_pymysql()


def make_engine(url: str, *, pool_size: int) -> Engine:
    """The library's lean engine, with one pooled connection per writer thread."""
    return create_engine(url, pool_size=pool_size, max_overflow=0)


def make_runner(
    engine: Engine,
    *,
    budget: bool,
    on_failed_attempt: Callable[[FailedAttempt], None] | None = None,
) -> Any:
    """A runner with the default retry policy; ``budget`` asks for retry budgets.

    ``on_failed_attempt`` hears of every failed attempt (the library's hooks).
    """
    hooks = [] if on_failed_attempt is None else [_hook(on_failed_attempt)]
    policy = RetryPolicy() if budget else RetryPolicy(retry_budget=None)
    return SqlAlchemyUnitOfWork.factory(engine, hooks=hooks, policy=policy)


def _hook(listener: Callable[[FailedAttempt], None]) -> Callable[[RetryDetails], None]:
    def hook(details: RetryDetails) -> None:
        kind = getattr(details.kind, "value", str(details.kind))
        listener((time.monotonic(), kind, details.errno, details.will_retry, details.reason))

    return hook


def write_row(runner: Any, statement: Insert, op_id: int) -> tuple[int, str | None]:
    """Run one operation, a one-row INSERT of ``op_id``: attempts made, and why it failed."""
    attempts = 0

    def insert_one(uow: Any) -> None:
        nonlocal attempts
        attempts += 1
        uow.session.execute(statement, {"op_id": op_id})

    try:
        runner.run(insert_one)
    except Exception as error:  # noqa: BLE001 -- every failure is counted, by its reason
        return attempts, failure_reason(error)
    return attempts, None


def failure_reason(error: BaseException) -> str:
    """Why an operation failed: error type, and the kind, errno and reason the runner gave."""
    details = retry_details(error)
    if details is None:
        return f"{type(error).__name__} (no retry details)"
    kind = getattr(details.kind, "value", str(details.kind))
    return f"{type(error).__name__} {kind} {details.errno}: {details.reason}"


def describe_default_policy() -> str:
    """The default retry policy's settings, in one line."""
    settings = RetryPolicy().model_dump()
    flat = [f"{name}={value}" for name, value in settings.items() if not isinstance(value, dict)]
    kinds = [
        f"{name}({', '.join(f'{k}={v}' for k, v in value.items() if v is not None)})"
        for name, value in settings.items()
        if isinstance(value, dict)
    ]
    return ", ".join(flat + kinds)


def quiet_library_logs() -> None:
    """The library logs every retry; the harness counts them instead."""
    logging.getLogger("retrying_uow").setLevel(logging.CRITICAL)
    logging.getLogger("retrying_uow").propagate = False
    # A pooled connection whose reset meets the dead server is logged with a traceback.
    logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)


def connect_preferred_tls(**kwargs: Any) -> Any:
    """A PyMySQL connection in PyMySQL's default TLS mode, its context built once per process.

    This is the library's own connection (``adapters.mysql.connect_sharing_tls_context``),
    as its lean engine makes it.
    """
    return connect_sharing_tls_context(_PYMYSQL, None, (), dict(kwargs))
