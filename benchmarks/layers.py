"""Layers: where the unit of work's time goes, from a hand-written session up to the runner.

Each layer adds one thing to the one before, all on the same kind of lean engine:

- ``hand``: ``with Session(engine) as s: s.add(...); s.commit()`` (the baseline);
- ``session_options``: a session as the unit of work opens it (``expire_on_commit=False``,
  ``close_resets_only=False``) with the explicit flush before COMMIT;
- ``backend``: the adapter's transaction without the runner (``Backend.begin``, then
  ``prepare`` with its flush, ``commit`` and ``close``): the unit of work, its repositories
  and the attempt's listeners (bounded reads, transaction guard, the reset ROLLBACK skipped);
- ``runner``: ``units.run(op)``, the whole unit of work (the retry loop on top).
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

import sqlalchemy
from sqlalchemy.orm import Session, sessionmaker

from adapters.sqlalchemy import SqlAlchemyBackend, SqlAlchemyUnitOfWork, create_engine
from benchmarks import machine
from benchmarks.model import REPOSITORIES, Item, drop_schema, reset_schema, write_one
from benchmarks.server import NO_TLS, database, given_url, server_facts
from benchmarks.stats import markdown_table, median, quartiles
from uow import AttemptInfo

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from sqlalchemy.engine import Engine


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=31, help="rounds incl. warm-up (31)")
    parser.add_argument("--ops", type=int, default=200, help="operations per layer per round")
    parser.add_argument("--database-url", help="reuse this MariaDB/MySQL")
    parser.add_argument("--sqlite-only", action="store_true", help="skip MariaDB")


def layers(make: Callable[[], Engine]) -> dict[str, Callable[[], object]]:
    engine = make()

    def hand() -> None:
        with Session(engine) as session:
            session.add(Item(name="one", qty=1))
            session.commit()

    sessions = sessionmaker(make(), expire_on_commit=False, close_resets_only=False)

    def session_options() -> None:
        with sessions() as session:
            session.add(Item(name="one", qty=1))
            session.flush()
            session.commit()

    backend = SqlAlchemyBackend(make(), repositories=REPOSITORIES)

    def backend_only() -> None:
        transaction = backend.begin(AttemptInfo("write_one", 1, time.monotonic() + 30.0))
        try:
            write_one(transaction.unit)
            transaction.prepare()
            transaction.commit()
        finally:
            transaction.close()

    units = SqlAlchemyUnitOfWork.factory(make(), repositories=REPOSITORIES)
    return {
        "hand": hand,
        "session_options": session_options,
        "backend": backend_only,
        "runner": lambda: units.run(write_one),
    }


def measure(ops: dict[str, Callable[[], object]], rounds: int, count: int) -> list[list[str]]:
    wall: dict[str, list[float]] = {name: [] for name in ops}
    cpu: dict[str, list[float]] = {name: [] for name in ops}
    shuffle = random.Random(0)
    for round_number in range(rounds):
        order = list(ops)
        shuffle.shuffle(order)
        for name in order:
            op = ops[name]
            cpu_start, start = time.process_time(), time.perf_counter()
            for _ in range(count):
                op()
            if round_number > 0:
                wall[name].append((time.perf_counter() - start) / count)
                cpu[name].append((time.process_time() - cpu_start) / count)
    rows = []
    previous = None
    for name in ops:
        ratios = [a / b for a, b in zip(wall[name], wall["hand"], strict=True)]
        cpu_ratios = [a / b for a, b in zip(cpu[name], cpu["hand"], strict=True)]
        q1, q3 = quartiles(ratios)
        added = "-" if previous is None else f"{(median(cpu[name]) - previous) * 1e6:+.0f}"
        previous = median(cpu[name])
        rows.append(
            [
                name,
                f"{median(wall[name]) * 1e6:.0f}",
                f"{median(cpu[name]) * 1e6:.0f}",
                added,
                f"{median(ratios):.3f}",
                f"{q1:.3f}-{q3:.3f}",
                f"{median(cpu_ratios):.3f}",
            ]
        )
    return rows


def run(args: argparse.Namespace) -> int:
    header = ["layer", "us/op", "cpu us/op", "cpu added", "x hand", "IQR", "cpu x hand"]
    tables: dict[str, list[list[str]]] = {}
    facts: dict[str, str] = {}

    def sqlite_engine() -> Engine:
        engine = create_engine("sqlite://")
        reset_schema(engine)
        return engine

    engines: list[Engine] = []

    def keep(engine: Engine) -> Engine:
        engines.append(engine)
        return engine

    try:
        tables["SQLite memory"] = measure(
            layers(lambda: keep(sqlite_engine())), args.rounds, args.ops
        )
        if not args.sqlite_only:
            with database(given_url(args.database_url), durable=False) as db:
                facts = server_facts(db)
                schema = sqlalchemy.create_engine(db.url, connect_args=NO_TLS)
                reset_schema(schema)
                url = db.url
                tables["MariaDB"] = measure(
                    layers(lambda: keep(create_engine(url, connect_args=NO_TLS))),
                    args.rounds,
                    args.ops,
                )
                drop_schema(schema)
                schema.dispose()
    finally:
        for engine in engines:
            engine.dispose()
    print(machine.describe(facts))
    print(f"rounds: {args.rounds} (first dropped), ops per layer per round: {args.ops}")
    for name, rows in tables.items():
        print(f"\n{name}: one-row write\n")
        print(markdown_table(header, rows))
    return 0
