"""The long-transaction guard: warn before a held transaction turns into "gone away".

An attempt that keeps its transaction open for long, or lets it sit idle past the
server's ``wait_timeout``, is the seed incident in the making. The guard looks at
each statement of an attempt (not of the user's own sessions) and at its COMMIT,
and logs one WARNING per attempt and condition. When a lost connection follows, the
database support names the likely cause on the error, so the retry log line and the
exception's notes say why it happened.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adapters.sqlalchemy._databases import AttemptState

logger = logging.getLogger("retrying_uow")

READ_TIMEOUT_CAUSE = "client read timeout: the operation's time budget ran out while waiting"


def arm(state: AttemptState) -> None:
    """Set the limits past which `check` has something to say, once the attempt has begun.

    Statements compare two numbers with them, so an attempt within both pays nothing more.
    """
    policy = state.attempt.policy
    connection = state.connection
    wait_timeout = None if connection is None else connection.wait_timeout
    if policy.warn_idle_transaction and wait_timeout is not None:
        state.idle_limit = wait_timeout
    if policy.warn_transaction_after is not None:
        state.open_limit = policy.warn_transaction_after


def due(state: AttemptState, now: float) -> bool:
    """Tell whether `check` may have something to say at ``now``."""
    return now - state.last_activity > state.idle_limit or now - state.began > state.open_limit


def check(state: AttemptState, now: float) -> None:
    """Warn (once each) when the attempt's transaction sat idle too long or is open too long."""
    policy = state.attempt.policy
    name = state.attempt.operation
    connection = state.connection
    wait_timeout = None if connection is None else connection.wait_timeout
    idle = now - state.last_activity
    if (
        policy.warn_idle_transaction
        and wait_timeout is not None
        and idle > wait_timeout
        and "idle" not in state.warned
    ):
        state.warned = (*state.warned, "idle")
        logger.warning(
            "transaction of %s sat idle %.1f s, past the server's wait_timeout of %.0f s: "
            "expect 'MySQL server has gone away'; do slow work outside the operation",
            name,
            idle,
            wait_timeout,
            extra={"uow_operation": name, "uow_idle": round(idle, 3)},
        )
    open_for = now - state.began
    limit = policy.warn_transaction_after
    if limit is not None and open_for > limit and "long" not in state.warned:
        state.warned = (*state.warned, "long")
        logger.warning(
            "transaction of %s has been open %.1f s (warn_transaction_after=%.1f s); "
            "long transactions hold locks and connections: split the operation",
            name,
            open_for,
            limit,
            extra={"uow_operation": name, "uow_open_for": round(open_for, 3)},
        )


def idle_cause(state: AttemptState | None, now: float, timeout_name: str) -> str | None:
    """Name why a server closed the attempt's connection, from how long it sat idle.

    ``timeout_name`` is the server setting that closes idle connections (``wait_timeout``).
    """
    if state is None or state.connection is None:
        return None
    connection = state.connection
    limit = connection.wait_timeout
    if limit is None:
        return None
    idle = now - state.last_activity
    if idle > limit:
        return f"idle {idle:.1f} s in a transaction; server {timeout_name} is {limit:.0f} s"
    pooled = None if connection.checked_in is None else state.began - connection.checked_in
    if pooled is not None and state.statements <= 1 and pooled > limit:
        return (
            f"idle {pooled:.1f} s in the pool; server {timeout_name} is {limit:.0f} s "
            f"(a pool_recycle below {timeout_name} avoids this first failed attempt)"
        )
    return None
