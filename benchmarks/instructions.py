"""Instructions: the client's CPU cost per operation, counted by valgrind, not timed.

On a shared machine wall-clock and CPU-time ratios move by several percent between runs.
The number of instructions the interpreter executes for an operation does not: each case
runs in its own process under ``valgrind --tool=callgrind`` twice, with ``--ops`` operations
after a warm-up and with none, and the difference divided by ``--ops`` is its count per
operation (import, set-up and warm-up cancel out). SQLite in memory only, where the client is
all there is. Needs ``valgrind``; about 45 s per process on this machine.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from benchmarks import machine
from benchmarks.stats import markdown_table

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

WARM_UP = 300
CASES = ("sqlite_session", "sqlite_uow_write", "sqlite_session_plain", "sqlite_session_seen")
COMPARISONS = (
    ("sqlite_uow_write", "sqlite_session", 1.10, "unit-of-work write vs hand-written session"),
    ("sqlite_session_seen", "sqlite_session_plain", 1.02, "your own sessions, engine it uses"),
)
_COLLECTED = re.compile(r"Collected : (\d+)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ops", type=int, default=1000, help="operations per case (1000)")
    parser.add_argument("--only", nargs="+", choices=CASES, help="cases to count")


def operation(case: str) -> Callable[[], object]:
    """Build ``case``'s operation, as the main table's case of the same name does."""
    from benchmarks.cases import Builder, hand_session, seen, uow_write  # noqa: PLC0415

    builder = Builder(None)
    if case == "sqlite_session":
        return hand_session(builder.sqlite())
    if case == "sqlite_uow_write":
        return uow_write(builder.sqlite())
    if case == "sqlite_session_plain":
        return hand_session(builder.sqlite_plain())
    return hand_session(seen(builder.sqlite_plain()))


def child(case: str, ops: int) -> None:
    """Run in the counted process: warm up, then ``ops`` operations."""
    op = operation(case)
    for _ in range(WARM_UP + ops):
        op()


def count(case: str, ops: int) -> int:
    """Return the instructions of a process that runs ``ops`` operations of ``case``."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-c",
        f"from benchmarks.instructions import child; child({case!r}, {ops})",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)  # noqa: S603
    found = _COLLECTED.search(done.stderr)
    if found is None:
        msg = f"valgrind gave no instruction count for {case}: {done.stderr[-500:]}"
        raise RuntimeError(msg)
    return int(found.group(1))


def run(args: argparse.Namespace) -> int:
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    cases = args.only or CASES
    per_op: dict[str, float] = {}
    for case in cases:
        per_op[case] = (count(case, args.ops) - count(case, 0)) / args.ops
        print(f"{case}: {per_op[case]:,.0f} instructions per operation", flush=True)
    print()
    print(machine.describe({}))
    print(f"valgrind callgrind, {args.ops} operations per case after {WARM_UP} warm-up\n")
    rows: list[list[Any]] = [[case, f"{per_op[case]:,.0f}"] for case in cases]
    print(markdown_table(["case", "instructions/op"], rows))
    print("\ngoals:")
    for case, baseline, goal, label in COMPARISONS:
        if case in per_op and baseline in per_op:
            ratio = per_op[case] / per_op[baseline]
            verdict = "met" if ratio <= goal else "MISSED"
            print(f"- {case} vs {baseline}, {label}: {ratio:.3f}x (goal <= {goal:.2f}x) {verdict}")
    return 0
