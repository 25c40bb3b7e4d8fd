"""Command line: the main table by default, or one of the sub-commands."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

SUBCOMMANDS = (
    "recovery", "connect", "memory", "layers", "network", "storm", "postgres", "async",
    "instructions",
)  # fmt: skip


class Command(Protocol):
    """What the module of a sub-command (or of the main table) offers the command line."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args and args[0] in SUBCOMMANDS else None
    module: Command
    if command == "recovery":
        from benchmarks import recovery as module  # noqa: PLC0415 -- load only what runs
    elif command == "connect":
        from benchmarks import connect as module  # noqa: PLC0415
    elif command == "memory":
        from benchmarks import memory as module  # noqa: PLC0415
    elif command == "layers":
        from benchmarks import layers as module  # noqa: PLC0415
    elif command == "network":
        from benchmarks import network as module  # noqa: PLC0415
    elif command == "storm":
        from benchmarks import storm as module  # noqa: PLC0415
    elif command == "postgres":
        from benchmarks import postgres as module  # noqa: PLC0415
    elif command == "async":
        from benchmarks import asyncio_cases as module  # noqa: PLC0415
    elif command == "instructions":
        from benchmarks import instructions as module  # noqa: PLC0415
    else:
        from benchmarks import run as module  # noqa: PLC0415
    parser = argparse.ArgumentParser(
        prog=f"python -m benchmarks{' ' + command if command else ''}",
        description=(module.__doc__ or "").strip().splitlines()[0],
        epilog=None if command else f"sub-commands: {', '.join(SUBCOMMANDS)} (each has --help)",
    )
    module.add_arguments(parser)
    parsed = parser.parse_args(args[1:] if command else args)
    return module.run(parsed)
