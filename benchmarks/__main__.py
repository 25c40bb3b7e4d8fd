"""Entry point: ``python -m benchmarks [recovery|connect|memory] [options]``."""

from benchmarks.cli import main

raise SystemExit(main())
