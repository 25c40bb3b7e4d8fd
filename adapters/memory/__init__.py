"""In-memory units of work and repositories: a faithful fake for fast tests of domain services.

It follows the same protocols as the SQLAlchemy adapter and behaves as it does
wherever user code can see it:

- entities added to a repository are pending until a flush (``uow.flush()``, a read
  through a repository, or the commit), which assigns missing ids, as an
  auto-increment column does at INSERT;
- within an attempt a repository returns the same object for the same id;
- a duplicate id, or a duplicate value of a column listed in ``unique``, raises
  SQLAlchemy's ``IntegrityError`` at the flush;
- an attempt works on a private copy: a failed attempt leaves no trace, and objects
  returned after the commit are detached copies that stay readable.

Faults injected with [`uow.testing.inject`][uow.testing.inject] strike here too: every repository
call that reads or flushes is a statement. The async twins (``AsyncInMemoryUnitOfWork``,
``AsyncInMemoryRepository``) serve operations run by an ``AsyncRunner``.
"""

from adapters.memory._store import (
    AsyncInMemoryBackend,
    DuplicateKey,
    InMemoryBackend,
    SimulatedError,
)
from adapters.memory._units import (
    AsyncInMemoryRepository,
    AsyncInMemoryUnitOfWork,
    InMemoryRepository,
    InMemoryUnitOfWork,
)

__all__ = [
    "AsyncInMemoryBackend",
    "AsyncInMemoryRepository",
    "AsyncInMemoryUnitOfWork",
    "DuplicateKey",
    "InMemoryBackend",
    "InMemoryRepository",
    "InMemoryUnitOfWork",
    "SimulatedError",
]


def _public_module() -> None:
    """Show public names as this package's (tracebacks, reprs, logs), not a private module's."""
    for name in __all__:
        value = globals()[name]
        if getattr(value, "__module__", "").startswith("adapters.memory._"):
            value.__module__ = __name__


_public_module()
