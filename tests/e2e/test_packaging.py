"""The built wheel, installed into a fresh virtualenv with its extras, is what users get.

The wheel is built once. One fresh virtualenv gets it with every driver extra and the
FastAPI one, dependencies resolved by pip as a user's would be (from the machine's pip
cache where it has them); ``uow`` and ``adapters`` must then come from the wheel, not
the checkout. The metadata check covers every extra, including those not installed.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from email.message import Message

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DRIVER_EXTRAS = {
    # extra: the module its driver installs
    "pymysql": "pymysql",
    "mysqlclient": "MySQLdb",
    "mysql-connector": "mysql.connector",
    "mariadb": "mariadb",
    "asyncmy": "asyncmy",
    "aiomysql": "aiomysql",
    "psycopg": "psycopg",
    "asyncpg": "asyncpg",
}
INSTALLED_EXTRAS = [*DRIVER_EXTRAS, "fastapi"]
PUBLIC_MODULES = [
    "uow",
    "uow.testing",
    "adapters.sqlalchemy",
    "adapters.mysql",
    "adapters.memory",
    "adapters.fastapi",
    "adapters.endpoints",
]

IMPORT_CHECK = """
import importlib, sys
site, modules, drivers = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(",")
for name in modules:
    module = importlib.import_module(name)
    assert module.__file__.startswith(site), (name, module.__file__)
for name in drivers:
    importlib.import_module(name)
from uow import CommitOutcomeUnknown, RetryPolicy, Runner, repository, retry_details
from adapters.sqlalchemy import SqlAlchemyUnitOfWork, AsyncSqlAlchemyUnitOfWork
from adapters.memory import InMemoryUnitOfWork
from adapters.fastapi import Units, units_lifespan
import uow
print(uow.__version__)
"""


def run(*args: str | Path, cwd: Path, timeout: float = 120) -> str:
    result = subprocess.run(  # noqa: S603 -- our own interpreter and paths
        [str(arg) for arg in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def project_version() -> str:
    version = PYPROJECT["project"]["version"]
    assert isinstance(version, str)
    return version


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from the checkout, as `python -m build --wheel` makes it."""
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--wheel", "--outdir", out, ROOT, cwd=ROOT)
    (built,) = out.glob("retrying_uow-*.whl")
    return built


@pytest.fixture(scope="module")
def metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        (path,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(archive.read(path).decode())


def test_wheel_holds_both_packages_typed_and_nothing_else(wheel: Path) -> None:
    """The wheel ships uow and adapters with their py.typed markers, and no tests or examples."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "uow/py.typed" in names
    assert "adapters/py.typed" in names
    assert "uow/__init__.py" in names
    assert "adapters/sqlalchemy/__init__.py" in names
    assert "adapters/mysql/__init__.py" in names
    top_level = {name.split("/")[0] for name in names}
    assert {name for name in top_level if not name.endswith(".dist-info")} == {"uow", "adapters"}


def test_wheel_metadata_declares_dependencies_and_readme(metadata: Message) -> None:
    """The metadata names the runtime dependencies and carries the README."""
    assert metadata["Name"] == "retrying-uow"
    assert metadata["Version"] == project_version()
    core = [r for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r]
    names = {re.split(r"[<>=!~; \[]", requirement)[0].lower() for requirement in core}
    assert names == {"sqlalchemy", "tenacity", "pydantic", "typing-extensions"}
    assert "## Quickstart" in metadata.get_payload()


def test_every_extra_declares_its_requirements(metadata: Message) -> None:
    """Each extra of pyproject.toml is in the wheel, with each of its requirements."""
    extras: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]
    assert set(DRIVER_EXTRAS) | {"fastapi"} <= set(extras)
    assert set(metadata.get_all("Provides-Extra") or []) == set(extras)
    declared = metadata.get_all("Requires-Dist") or []
    for extra, requirements in extras.items():
        of_extra = [r for r in declared if re.search(rf"extra == ['\"]{extra}['\"]", r)]
        for requirement in requirements:
            if requirement.startswith("retrying-uow["):
                continue  # the aggregate extras (test, dev) name the others
            name = re.split(r"[<>=!~ \[]", requirement)[0].lower().replace("_", "-")
            assert any(r.lower().replace("_", "-").startswith(name) for r in of_extra), (
                f"extra {extra!r} lacks {requirement!r}: {of_extra}"
            )


def test_wheel_installs_with_its_extras_and_imports_in_a_fresh_virtualenv(
    wheel: Path, tmp_path: Path
) -> None:
    """With every driver extra and FastAPI, the public modules import from the wheel."""
    env = tmp_path / "venv"
    run(sys.executable, "-m", "venv", env, cwd=tmp_path)
    python = env / "bin" / "python"
    extras = ",".join(INSTALLED_EXTRAS)
    run(
        python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
        f"{wheel}[{extras}]", cwd=tmp_path, timeout=600,
    )  # fmt: skip
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = run(python, "-c", where, cwd=tmp_path).strip()
    # -I: neither the checkout (current directory) nor PYTHONPATH can supply the packages.
    version = run(
        python, "-I", "-c", IMPORT_CHECK, site, ",".join(PUBLIC_MODULES),
        ",".join(DRIVER_EXTRAS.values()), cwd=tmp_path,
    ).strip()  # fmt: skip
    assert version == project_version()
