"""What the figures were measured on."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def library_revision() -> str:
    """The installed version, and the checkout's commit when run from one."""
    revision = version("retrying-uow")
    git = shutil.which("git")
    if git is not None:
        result = subprocess.run(  # noqa: S603 -- a fixed, read-only command
            [git, "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode == 0:
            revision += f" (commit {result.stdout.strip()})"
    return revision


def describe(facts: dict[str, str]) -> str:
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    parts = [
        f"machine: {os.cpu_count()} CPUs ({cpu_model()}), load average {load}",
        (
            f"Python {platform.python_version()}, SQLAlchemy {version('SQLAlchemy')}, "
            f"PyMySQL {version('PyMySQL')}, retrying-uow {library_revision()}"
        ),
    ]
    if facts:
        parts.append(
            f"server: {facts['version']}, innodb_flush_log_at_trx_commit="
            f"{facts['innodb_flush_log_at_trx_commit']}, log_bin={facts['log_bin']}"
        )
    return "\n".join(parts)
