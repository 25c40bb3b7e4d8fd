"""SQLModel on the unit of work: ``uow.session`` is a ``sqlmodel.Session``, ``exec`` typed.

The unit of work is generic in its Session class: ``class Guild(SqlAlchemyUnitOfWork[
sqlmodel.Session])`` makes each attempt's session a SQLModel one, and mypy knows it, so
``uow.session.exec(select(Hero))`` returns typed results (``mypy --strict`` checks this
file). Without a subclass, ``SqlAlchemyUnitOfWork.factory(engine,
session_class=sqlmodel.Session)`` makes the same sessions, typed as SQLAlchemy's.

Each operation recruits or reads heroes in one transaction, rerun whole on a lost
connection: the run below cuts the connection under the first attempt of one of them.

    python examples/sqlmodel_app.py               # SQLite in a temporary folder
    DATABASE_URL=mysql+pymysql://app:pw@127.0.0.1:3306/app python examples/sqlmodel_app.py

Exit status 0 when every check held.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import uuid

from sqlmodel import Field, Session, SQLModel, col, select

from adapters.sqlalchemy import SqlAlchemyUnitOfWork, create_engine, repository
from uow import RetryDetails, RetryPolicy, Runner
from uow.testing import Fault, inject, set_testing


class Team(SQLModel, table=True):
    __tablename__ = "sqlmodel_app_teams"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True)


class Hero(SQLModel, table=True):
    __tablename__ = "sqlmodel_app_heroes"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64)
    team_id: int = Field(foreign_key="sqlmodel_app_teams.id")


class HeroRepository:
    """Heroes and their teams, read and written through the attempt's SQLModel session."""

    def __init__(self, uow: Guild) -> None:
        self._uow = uow

    def team(self, name: str) -> Team:
        session = self._uow.session
        # filter() is where(); SQLModel's own where() is typed Any when mypy targets 3.10.
        team = session.exec(select(Team).filter(col(Team.name) == name)).first()
        if team is None:
            team = Team(name=name)
            session.add(team)
            session.flush()  # its id, for the heroes that join it
        return team

    def add(self, hero: Hero) -> Hero:
        self._uow.session.add(hero)
        return hero

    def of_team(self, name: str) -> list[Hero]:
        query = select(Hero).join(Team).filter(col(Team.name) == name).order_by(col(Hero.name))
        return list(self._uow.session.exec(query).all())


class Guild(SqlAlchemyUnitOfWork[Session]):
    heroes = repository(HeroRepository)


# --- The operations ---------------------------------------------------------------------


def recruit(uow: Guild, name: str, team_name: str) -> Hero:
    team = uow.heroes.team(team_name)
    assert team.id is not None  # noqa: S101 -- flushed: the database gave it an id
    hero = uow.heroes.add(Hero(name=name, team_id=team.id))
    uow.flush()
    return hero


def roster(uow: Guild, team_name: str) -> list[str]:
    return [hero.name for hero in uow.heroes.of_team(team_name)]


def count_heroes(uow: Guild) -> int:
    return len(uow.session.exec(select(Hero)).all())


def main() -> int:
    logging.basicConfig(format="  %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    with tempfile.TemporaryDirectory() as workdir:
        url = os.environ.get("DATABASE_URL") or f"sqlite:///{workdir}/guild.db"
        ok = recruit_heroes(url)
    print("OK" if ok else "UNEXPECTED: see above")
    return 0 if ok else 1


def recruit_heroes(url: str) -> bool:
    engine = create_engine(url)
    SQLModel.metadata.create_all(engine)
    retries: list[RetryDetails] = []
    units: Runner[Guild] = Guild.factory(
        engine, policy=RetryPolicy(timeout=30), hooks=[retries.append]
    )
    print(f"SQLModel on {engine.url!r}")
    team = f"team-{uuid.uuid4().hex[:8]}"
    try:
        hero = units.run(recruit, "Deadpond", team)
        print(f"  recruited {hero.name} (id {hero.id}) into {team}")

        # The connection is lost under the first attempt's second statement: the whole
        # operation is rerun on a fresh connection, and the hero is recruited once.
        with set_testing(True), inject(Fault.disconnect(at=2)):  # no backoff sleep
            units.run(recruit, "Rusty-Man", team)
        rerun = [details.kind.value for details in retries if details.will_retry]
        print(f"  recruited Rusty-Man after a lost connection; reruns: {rerun}")

        names = units.run(roster, team)
        print(f"  roster of {team}: {names}; heroes in all: {units.run(count_heroes)}")
    finally:
        engine.dispose()
    return hero.id is not None and rerun == ["disconnect"] and names == ["Deadpond", "Rusty-Man"]


if __name__ == "__main__":
    sys.exit(main())
