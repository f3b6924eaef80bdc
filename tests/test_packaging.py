"""Packaging: every library the package imports is declared, and the built wheel, installed into a fresh
virtualenv outside the checkout, serves the demo."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import httpx
from support import CHROME, GPTBOT, ROOT, free_port, wait_for_http

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


def test_the_built_wheel_installs_into_a_fresh_virtualenv_and_serves_the_demo(tmp_path: Path) -> None:
    """What a user outside the checkout gets: `python -m build` (sdist, then the wheel built
    from it), the wheel with its redis extra in a new virtualenv, the demo served from there.

    Needs the package registry for the build backend and the dependencies, nothing else.
    """
    dist = tmp_path / "dist"
    run_ok([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], cwd=tmp_path, timeout=600)
    wheels = list(dist.glob("guard_asgi-*-py3-none-any.whl"))
    assert len(wheels) == 1 and list(dist.glob("guard_asgi-*.tar.gz")), sorted(p.name for p in dist.iterdir())
    venv = tmp_path / "venv"
    run_ok([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    bin_ = venv / "bin"
    run_ok([str(bin_ / "pip"), "install", "--quiet", f"{wheels[0]}[redis]"], cwd=tmp_path, timeout=600)

    home = tmp_path / "elsewhere"  # outside the checkout: only the installed package can answer
    home.mkdir()
    check = run_ok([str(bin_ / "guard"), "check", str(venv_rules(venv))], cwd=home)
    assert ": ok (" in check.stdout
    imported = run_ok([str(bin_ / "python"), "-c", "import guard, redis; print(guard.__file__)"], cwd=home)
    assert imported.stdout.startswith(str(venv))

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUARD_", "PYTHON", "VIRTUAL_ENV"))}
    demo = subprocess.Popen(
        [str(bin_ / "guard"), "demo", "--port", str(port)],
        cwd=home,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(base + "/healthz", timeout=60, process=demo)
        assert httpx.get(base + "/tracks/1/stream", headers={"user-agent": GPTBOT}).status_code == 403
        with httpx.Client(base_url=base, headers={"user-agent": CHROME}) as browser:
            page = browser.get("/tracks/1", headers={"sec-fetch-mode": "navigate", "sec-fetch-dest": "document"})
            assert page.status_code == 200
            audio = browser.get("/tracks/1/stream", headers={"range": "bytes=0-99", "sec-fetch-mode": "no-cors"})
            assert audio.status_code == 206
        assert httpx.get(base + "/robots.txt").text.count("GPTBot") >= 1
    finally:
        demo.terminate()
        _, err = demo.communicate(timeout=30)
    assert "Traceback" not in err


def venv_rules(venv: Path) -> Path:
    """The shipped rules inside the virtualenv's copy of the package."""
    found = list(venv.glob("lib/python*/site-packages/guard/shipped/default.yaml"))
    assert len(found) == 1, found
    return found[0]


def run_ok(command: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUARD_", "PYTHON", "VIRTUAL_ENV"))}
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result
