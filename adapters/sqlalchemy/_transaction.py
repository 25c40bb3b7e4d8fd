"""The runner's handle on one attempt's Session: prepare, commit, roll back, close.

Until it is closed, new connections opened for the attempt are bounded by its deadline.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from adapters.sqlalchemy._expired import load_expired
from adapters.sqlalchemy._listeners import connect_deadline

if TYPE_CHECKING:
    from collections.abc import Sequence
    from contextvars import Token

    from sqlalchemy.orm import Session

    from adapters.sqlalchemy._databases import AttemptState, DatabaseSupport
    from adapters.sqlalchemy._markers import CommitMarkers
    from uow import UnitOfWorkBase

logger = logging.getLogger("retrying_uow")


class SessionTransaction:
    """The runner's handle on one attempt's session."""

    __slots__ = ("_connects", "_markers", "_token", "session", "state", "unit")

    def __init__(
        self,
        unit: UnitOfWorkBase,
        session: Session,
        state: AttemptState,
        markers: CommitMarkers | None,
    ) -> None:
        """Hold the attempt; until `close`, new connections are bounded by its deadline."""
        self.unit = unit
        self.session = session
        self.state = state
        self._markers = markers
        self._token: str | None = None
        self._connects: Token[float | None] | None = connect_deadline.set(unit.attempt.deadline)

    @property
    def events(self) -> Sequence[object]:
        return self.unit.events

    @property
    def errors(self) -> Sequence[BaseException]:
        return self.state.errors

    @property
    def wrote(self) -> bool:
        return self.state.wrote

    @property
    def support(self) -> DatabaseSupport:
        return self.state.support

    def prepare(self) -> None:
        session = self.session
        session.flush()
        load_expired(session)
        if not self.state.wrote:
            return  # nothing to lose at COMMIT
        self.state.support.before_commit(session, self.state)
        if self._markers is not None:
            self._token = self._markers.new_token()
            self._markers.write(session.connection(), self._token)

    def commit(self) -> None:
        self.state.owner = True
        self.session.commit()
        if self._markers is not None and self._token is not None:
            self._markers.maybe_prune(self.unit.attempt.deadline)

    def committed(self, timeout: float) -> bool | None:
        if self._markers is not None and self._token is not None:
            return self._markers.lookup(self._token, self.state, timeout)
        # No marker: the database may still be able to tell (PostgreSQL can).
        engine = self.session.get_bind()
        if not isinstance(engine, Engine):
            return None
        return self.state.support.outcome(engine, self.state, timeout)

    def rollback(self) -> None:
        self.state.owner = True
        try:
            self.session.rollback()
        except Exception:  # the original error matters; a dead link cannot roll back
            logger.debug("rollback failed after an error; the session is discarded", exc_info=True)

    def close(self) -> None:
        self.unit.close()
        self.state.owner = True
        try:
            self.session.close()
        except Exception:
            logger.debug("closing the session failed; it is discarded", exc_info=True)
        finally:
            self.state.ended = True
            self.state.owner = False
            if self._connects is not None:
                try:
                    connect_deadline.reset(self._connects)
                except ValueError:  # closed in another context (an async task's cleanup)
                    connect_deadline.set(None)
                self._connects = None
