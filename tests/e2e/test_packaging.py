"""The built wheel, installed into a fresh virtualenv, is the package users get.

Dependencies are not downloaded: the fresh environment sees this interpreter's
site-packages through a ``.pth`` file, while ``uow`` and ``adapters`` come from the wheel
only (checked by their paths). The wheel's declared dependencies are checked in its metadata.
"""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

IMPORT_CHECK = """
import sys
import uow, uow.testing, adapters.sqlalchemy, adapters.memory, adapters.mysql, adapters.markers
for module in (uow, adapters.sqlalchemy, adapters.memory, adapters.mysql, adapters.markers):
    assert module.__file__.startswith(sys.argv[1]), module.__file__
from uow import CommitOutcomeUnknown, RetryPolicy, Runner, retry_details
from adapters.sqlalchemy import SqlAlchemyUnitOfWork
from adapters.memory import InMemoryUnitOfWork
print(uow.__version__)
"""


def run(*args: str | Path, cwd: Path) -> str:
    result = subprocess.run(  # noqa: S603 -- our own interpreter and paths
        [str(arg) for arg in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def project_version() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'^\[project\]$.*?^version = "([^"]+)"$', text, re.MULTILINE | re.DOTALL)
    assert match is not None
    return match.group(1)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from the checkout, as `python -m build --wheel` makes it."""
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--wheel", "--outdir", out, ROOT, cwd=ROOT)
    (built,) = out.glob("retrying_uow-*.whl")
    return built


def test_wheel_holds_both_packages_typed_and_nothing_else(wheel: Path) -> None:
    """The wheel ships uow and adapters with their py.typed markers, and no tests or examples."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "uow/py.typed" in names
    assert "adapters/py.typed" in names
    assert "uow/__init__.py" in names
    assert "adapters/sqlalchemy.py" in names
    top_level = {name.split("/")[0] for name in names}
    assert {name for name in top_level if not name.endswith(".dist-info")} == {"uow", "adapters"}


def test_wheel_metadata_declares_dependencies_and_readme(wheel: Path) -> None:
    """The metadata names the runtime dependencies, the pymysql extra and the README."""
    with zipfile.ZipFile(wheel) as archive:
        (path,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(path).decode())
    assert metadata["Name"] == "retrying-uow"
    assert metadata["Version"] == project_version()
    requires = " ".join(metadata.get_all("Requires-Dist") or [])
    for dependency in ("sqlalchemy", "tenacity", "pydantic", "pydantic-settings"):
        assert dependency in requires.lower()
    assert "pymysql" in (metadata.get_all("Provides-Extra") or [])
    assert "## Quickstart" in metadata.get_payload()


def test_wheel_installs_and_imports_in_a_fresh_virtualenv(wheel: Path, tmp_path: Path) -> None:
    """Installed into a new virtualenv, the public API imports and __version__ is pyproject's."""
    env = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", env, cwd=tmp_path)
    python = env / "bin" / "python"
    pip: list[str | Path] = [sys.executable, "-m", "pip", "--python", python]
    run(*pip, "install", "-q", "--no-deps", "--no-index", wheel, cwd=tmp_path)
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(run(python, "-c", where, cwd=tmp_path).strip())
    host = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_host_dependencies.pth").write_text("\n".join(sorted(host)) + "\n")
    # -I: neither the checkout (current directory) nor PYTHONPATH can supply the packages.
    version = run(python, "-I", "-c", IMPORT_CHECK, str(site), cwd=tmp_path).strip()
    assert version == project_version()
