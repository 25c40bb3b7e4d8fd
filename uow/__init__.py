"""retrying-uow: business operations that survive lost database connections.

Each operation runs in its own short-lived unit of work; on a transient failure
(lost connection, server restart, deadlock, failover) the whole operation is rerun
on a fresh connection under a bounded [`RetryPolicy`][uow.RetryPolicy].
"""

from importlib.metadata import PackageNotFoundError, version

from uow._async_runner import AsyncRunner
from uow._attempt import AsyncAttempt, Attempt, JoinedAttempt
from uow._budget import RetryBudget
from uow._decision import Reason
from uow._errors import (
    BlockFormError,
    CommitOutcomeUnknown,
    NestingError,
    TransactionControlError,
    UnitOfWorkClosedError,
    UnitOfWorkError,
)
from uow._events import EventHandler, EventHandlers
from uow._hooks import RetryDetails, RetryHook
from uow._kinds import Classification, ErrorKind
from uow._loop import retry_details
from uow._policy import KindPolicy, RetryBudgetPolicy, RetryPolicy
from uow._protocols import (
    AsyncBackend,
    AsyncTransaction,
    AttemptInfo,
    Backend,
    Repository,
    Transaction,
    UnitOfWork,
)
from uow._runner import Runner
from uow._settings import AsyncRunnerOptions, RunnerOptions, RunnerSettings
from uow._unit import AttemptScope, UnitOfWorkBase, repository

try:
    __version__ = version("retrying-uow")
except PackageNotFoundError:  # pragma: no cover - running from a plain checkout
    __version__ = "0.0.0"

__all__ = [
    "AsyncAttempt",
    "AsyncBackend",
    "AsyncRunner",
    "AsyncRunnerOptions",
    "AsyncTransaction",
    "Attempt",
    "AttemptInfo",
    "AttemptScope",
    "Backend",
    "BlockFormError",
    "Classification",
    "CommitOutcomeUnknown",
    "ErrorKind",
    "EventHandler",
    "EventHandlers",
    "JoinedAttempt",
    "KindPolicy",
    "NestingError",
    "Reason",
    "Repository",
    "RetryBudget",
    "RetryBudgetPolicy",
    "RetryDetails",
    "RetryHook",
    "RetryPolicy",
    "Runner",
    "RunnerOptions",
    "RunnerSettings",
    "Transaction",
    "TransactionControlError",
    "UnitOfWork",
    "UnitOfWorkBase",
    "UnitOfWorkClosedError",
    "UnitOfWorkError",
    "__version__",
    "repository",
    "retry_details",
]


def _public_module() -> None:
    """Show public names as this package's (tracebacks, reprs, logs), not a private module's."""
    for name in __all__:
        value = globals()[name]
        if getattr(value, "__module__", "").startswith("uow._"):
            value.__module__ = __name__


_public_module()
