"""What an operation returns stays readable: load what the flush left unloaded, before COMMIT.

The session is created with ``expire_on_commit=False``, so committed objects keep
their attributes. But a flush itself expires the columns the server fills in
(``server_default``, ``onupdate=func.now()``) unless the dialect could return them;
read after the session closed, they raise ``DetachedInstanceError``. So before
COMMIT, the attempt loads them: one SELECT per mapped class that has any, and
nothing at all in the common case.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, tuple_

if TYPE_CHECKING:
    from sqlalchemy.orm import InstanceState, Mapper, Session

_CHUNK = 500


def load_expired(session: Session) -> None:
    """Reload the expired attributes of every persistent object the session holds."""
    stale: dict[Mapper[Any], list[InstanceState[Any]]] = defaultdict(list)
    for state in session.identity_map.all_states():
        if state.expired_attributes and state.key is not None and not state.deleted:
            stale[state.mapper].append(state)
    for mapper, states in stale.items():
        _reload(session, mapper, states)


def _reload(session: Session, mapper: Mapper[Any], states: list[InstanceState[Any]]) -> None:
    columns = mapper.primary_key
    for start in range(0, len(states), _CHUNK):
        keys = [state.key[1] for state in states[start : start + _CHUNK] if state.key is not None]
        if len(columns) == 1:
            condition = columns[0].in_([key[0] for key in keys])
        else:
            condition = tuple_(*columns).in_(keys)
        query = select(mapper).where(condition).execution_options(populate_existing=True)
        session.execute(query).all()
