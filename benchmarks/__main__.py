"""Entry point: ``python -m benchmarks [SUB-COMMAND] [options]``; see ``--help``."""

from benchmarks.cli import main

raise SystemExit(main())
