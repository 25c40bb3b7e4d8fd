"""The public surface: a small sorted __all__, no SQLAlchemy in the core, a real version."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import uow
import uow.testing


@pytest.mark.parametrize("module", [uow, uow.testing], ids=lambda m: m.__name__)
def test_all_is_sorted_and_unique(module: object) -> None:
    """__all__ is kept sorted without duplicates, so a diff shows what was added."""
    names = list(module.__all__)  # type: ignore[attr-defined]
    assert names == sorted(names)
    assert len(names) == len(set(names))


@pytest.mark.parametrize("module", [uow, uow.testing], ids=lambda m: m.__name__)
def test_every_public_name_is_importable(module: object) -> None:
    """Every name in __all__ exists on the package and `from ... import name` works."""
    name_of_module = module.__name__  # type: ignore[attr-defined]
    for name in module.__all__:  # type: ignore[attr-defined]
        assert hasattr(module, name), name
        namespace: dict[str, object] = {}
        exec(f"from {name_of_module} import {name}", namespace)  # noqa: S102 -- test-owned names
        assert namespace[name] is getattr(module, name)


def test_public_classes_are_shown_as_the_packages_own() -> None:
    """Public classes live in private modules but show the package's name (logs, tracebacks)."""
    import adapters.memory  # noqa: PLC0415
    import adapters.mysql  # noqa: PLC0415
    import adapters.sqlalchemy  # noqa: PLC0415

    for package in (uow, adapters.memory, adapters.mysql, adapters.sqlalchemy):
        for name in package.__all__:
            value = getattr(package, name)
            if isinstance(value, type) and value.__module__.startswith(package.__name__):
                assert value.__module__ == package.__name__, (name, value.__module__)
                assert getattr(importlib.import_module(package.__name__), name) is value


def test_core_does_not_import_sqlalchemy() -> None:
    """Importing uow (and uow.testing) pulls in neither SQLAlchemy nor a MySQL driver."""
    code = (
        "import sys, uow, uow.testing\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'sqlalchemy', 'pymysql', 'MySQLdb', 'adapters'})\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(  # noqa: S603 -- our own interpreter and code
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_version_is_the_installed_distributions() -> None:
    """uow.__version__ comes from the installed package metadata."""
    assert uow.__version__ == importlib.metadata.version("retrying-uow")
    assert uow.__version__ != "0.0.0"


@pytest.mark.parametrize("package", ["uow", "adapters"])
def test_package_is_typed(package: str) -> None:
    """Both packages ship py.typed, so users' type checkers read their annotations."""
    spec = importlib.util.find_spec(package)
    assert spec is not None
    assert spec.origin is not None
    assert (Path(spec.origin).parent / "py.typed").is_file()
