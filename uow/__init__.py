"""retrying-uow: business operations that survive lost MySQL connections.

Each operation runs in its own short-lived unit of work; on a transient failure
(lost connection, server restart, deadlock, failover) the whole operation is rerun
on a fresh connection under a bounded :class:`RetryPolicy`.
"""

from importlib.metadata import PackageNotFoundError, version

from uow._attempt import Attempt
from uow._errors import CommitOutcomeUnknown, UnitOfWorkClosedError, UnitOfWorkError
from uow._events import EventHandler, EventHandlers
from uow._hooks import RetryDetails, RetryHook
from uow._kinds import Classification, ErrorKind
from uow._policy import KindPolicy, RetryPolicy
from uow._protocols import AttemptInfo, Backend, Repository, Transaction, UnitOfWork
from uow._runner import Runner, retry_details
from uow._unit import UnitOfWorkBase

try:
    __version__ = version("retrying-uow")
except PackageNotFoundError:  # pragma: no cover - running from a plain checkout
    __version__ = "0.0.0"

__all__ = [
    "Attempt",
    "AttemptInfo",
    "Backend",
    "Classification",
    "CommitOutcomeUnknown",
    "ErrorKind",
    "EventHandler",
    "EventHandlers",
    "KindPolicy",
    "Repository",
    "RetryDetails",
    "RetryHook",
    "RetryPolicy",
    "Runner",
    "Transaction",
    "UnitOfWork",
    "UnitOfWorkBase",
    "UnitOfWorkClosedError",
    "UnitOfWorkError",
    "__version__",
    "retry_details",
]
