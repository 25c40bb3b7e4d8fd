"""Cost of one new PyMySQL connection with each TLS setting, with and without TLS offered."""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

import pymysql

from benchmarks import machine
from benchmarks.server import Database, server_facts, throwaway_server
from benchmarks.stats import markdown_table, median, quartiles
from benchmarks.storm_runner import connect_preferred_tls
from benchmarks.tls import shared_context, tls_server

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rounds",
        type=int,
        default=11,
        help="rounds including the warm-up round, which is dropped (default 11)",
    )
    parser.add_argument(
        "--connects", type=int, default=10, help="connections per variant per round (default 10)"
    )


def variants(db: Database) -> dict[str, Callable[[], Any]]:
    kwargs = db.pymysql_kwargs()
    context = shared_context()
    return {
        "default (TLS PREFERRED, context per connect)": lambda: pymysql.connect(**kwargs),
        "ssl_disabled=True": lambda: pymysql.connect(**kwargs, ssl_disabled=True),
        "ssl=shared SSLContext (TLS REQUIRED)": lambda: pymysql.connect(**kwargs, ssl=context),
        "PREFERRED, context built once": lambda: connect_preferred_tls(**kwargs),
    }


def uses_tls(connection: Any) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        row = cursor.fetchone()
    return bool(row and row[1])


def measure(db: Database, rounds: int, connects: int) -> dict[str, tuple[str, list[float]]]:
    """Per variant: whether TLS is used (or why it fails), and ms per connect+close per round."""
    ways = variants(db)
    results: dict[str, tuple[str, list[float]]] = {}
    for name, connect in ways.items():
        try:
            connection = connect()
        except pymysql.err.MySQLError as error:
            results[name] = (f"fails: {error.args[-1]}", [])
            continue
        results[name] = ("yes" if uses_tls(connection) else "no", [])
        connection.close()
    shuffle = random.Random(0)
    for round_number in range(rounds):
        order = [name for name, (tls, _) in results.items() if not tls.startswith("fails")]
        shuffle.shuffle(order)
        for name in order:
            connect = ways[name]
            start = time.perf_counter()
            for _ in range(connects):
                connect().close()
            seconds = time.perf_counter() - start
            if round_number > 0:
                results[name][1].append(seconds / connects * 1e3)
    return results


def table(rows_by_server: dict[str, dict[str, tuple[str, list[float]]]]) -> str:
    header = ["server", "PyMySQL TLS setting", "TLS used", "ms/connect", "IQR", "x ssl_disabled"]
    rows = []
    for server, results in rows_by_server.items():
        base_times = results["ssl_disabled=True"][1]
        base = median(base_times) if base_times else None
        for name, (tls, times) in results.items():
            if not times:
                rows.append([server, name, tls, "-", "-", "-"])
                continue
            q1, q3 = quartiles(times)
            ratio = f"{median(times) / base:.1f}" if base else "-"
            rows.append([server, name, tls, f"{median(times):.2f}", f"{q1:.2f}-{q3:.2f}", ratio])
    return markdown_table(header, rows, text_columns=3)


def run(args: argparse.Namespace) -> int:
    results: dict[str, dict[str, tuple[str, list[float]]]] = {}
    with throwaway_server() as server:
        db = Database(server.url(), server)
        facts = server_facts(db)
        results["no TLS offered"] = measure(db, args.rounds, args.connects)
    with tls_server() as server:
        if server is not None:
            results["TLS offered"] = measure(
                Database(server.url(), server), args.rounds, args.connects
            )
    print(machine.describe(facts))
    print(
        f"rounds: {args.rounds} (first dropped), connects per variant per round: {args.connects}\n"
    )
    print(table(results))
    return 0
