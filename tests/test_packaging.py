"""Packaging: every library the package imports is declared, so `pip install` gives a working guard."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions

from support import ROOT

#: Imported only where an extra is installed: the Redis store, and guard.testing (helpers for tests).
OPTIONAL = {"redis": "redis", "httpx": "dev"}
#: Installed with a declared dependency, and versioned by it.
COMES_WITH = {"pydantic_core": "pydantic"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_top_level_modules() -> set[str]:
    names = set()
    for path in (ROOT / "guard").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n != "guard" and n not in sys.stdlib_module_names}


def declared(project: dict, extra: str | None = None) -> set[str]:
    specs = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return {normalise(re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0]) for spec in specs}


def test_every_imported_library_is_a_dependency_or_in_its_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = declared(project)
    distributions = packages_distributions()
    missing = []
    for module in sorted(imported_top_level_modules()):
        names = {normalise(d) for d in distributions.get(module, [module])} | {COMES_WITH.get(module, module)}
        extra = OPTIONAL.get(module)
        wanted = declared(project, extra) if extra else runtime
        if not names & wanted:
            missing.append(f"{module} ({', '.join(sorted(names))})")
    assert not missing, f"imported by guard but not declared in pyproject.toml: {missing}"


def test_the_distribution_name_is_not_the_import_name_and_the_license_is_shipped() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "guard-asgi"  # `guard` on PyPI is an unrelated project
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert (ROOT / "guard" / "py.typed").exists()


def test_every_package_directory_is_packaged() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(folder.relative_to(ROOT).parts)
        for folder in [ROOT / "guard", *(ROOT / "guard").rglob("*")]
        if folder.is_dir() and any(folder.glob("*.py"))
    }
    assert found <= listed, f"not in [tool.setuptools] packages: {sorted(found - listed)}"
    for name in found:
        assert (ROOT / name.replace(".", "/") / "__init__.py").exists(), f"{name} has no __init__.py"
