"""The docs cannot go stale: every shell example of the README's Quickstart and of the docs
home runs against a real demo and prints what its comment promises; error samples and
figure tables are what the commands and the saved figures give today.

An example is a line of a ``sh`` block; the comment line right after it is the first line
it must print (``...`` at the end: the beginning of that line). ``guard demo ARGS`` starts
the demo (on a free port, the examples' ``localhost:8000`` pointed at it); variable
assignments carry over to the lines after them.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from support import CHROME, ROOT, free_port, wait_for_http

README = ROOT / "README.md"
INDEX = ROOT / "docs" / "index.md"
#: Lines that are not run here, and what tests them instead.
NOT_RUN = {
    "bash scripts/test": "it is this test suite (CI runs it)",
    "pip install -e .": "tests/test_packaging.py installs the wheel into a fresh virtualenv",
}


class Example(NamedTuple):
    command: str
    expected: str | None  # the first line it prints, as its comment says
    source: str


def section(text: str, name: str) -> str:
    """The part of ``text`` between pymdownx.snippets' ``[start:name]`` and ``[end:name]`` markers."""
    found = re.search(rf"--8<-- \[start:{name}\] -->\n(.*?)<!-- --8<-- \[end:{name}\]", text, re.S)
    assert found, f"no '{name}' section markers"
    return found.group(1)


def page(path: Path) -> str:
    """A docs page with its ``--8<-- "README.md:name"`` includes expanded, as mkdocs builds it."""

    def include(match: re.Match[str]) -> str:
        file, _, name = match.group(1).partition(":")
        text = (ROOT / file).read_text()
        return section(text, name) if name else text

    return re.sub(r'^--8<-- "([^"]+)"$', include, path.read_text(), flags=re.M)


def sh_blocks(text: str) -> list[list[str]]:
    return [block.splitlines() for block in re.findall(r"^```sh\n(.*?)^```$", text, re.S | re.M)]


def examples(text: str, source: str) -> Iterator[Example]:
    for block in sh_blocks(text):
        for i, line in enumerate(block):
            if not line.strip() or line.startswith("#"):
                continue
            after = block[i + 1] if i + 1 < len(block) else ""
            expected = after[2:] if after.startswith("# ") else None
            yield Example(line, expected, source)


def promised(expected: str, printed: str) -> bool:
    first = printed.splitlines()[0].rstrip() if printed.strip() else ""
    if expected.endswith("..."):
        return first.startswith(expected[:-3].rstrip())
    return first == expected


class Demo:
    """``guard demo`` as an example starts it, on a free port."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.port = 0

    def start(self, args: list[str]) -> None:
        self.stop()
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("GUARD_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "guard", "demo", *args, "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**env, "PYTHONPATH": str(ROOT)},
        )
        wait_for_http(f"http://127.0.0.1:{self.port}/healthz", process=self.process)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)
            self.process = None


def run_examples(items: list[Example], workdir: Path) -> list[str]:
    """Run each example in order; what went wrong, one line each."""
    demo = Demo()
    assignments: list[str] = []
    prelude = f'guard() {{ "{sys.executable}" -m guard "$@"; }}\n'
    wrong: list[str] = []
    try:
        for example in items:
            command = example.command
            parts = [part.strip() for part in command.split("&&")]
            if any(part in NOT_RUN for part in parts):
                parts = [part for part in parts if part not in NOT_RUN]
                if not parts:
                    continue
            if parts[-1].startswith("guard demo"):
                demo.start(shlex.split(parts[-1])[2:])
                continue
            if re.match(r"^[A-Z_]+=", command):
                assignments.append(command)
                continue
            pointed = command.replace("localhost:8000", f"localhost:{demo.port}")
            script = prelude + "\n".join(assignments) + "\n" + pointed
            result = subprocess.run(
                ["bash", "-c", script],
                cwd=workdir,
                capture_output=True,
                text=True,
                timeout=60,
                env={**{k: v for k, v in os.environ.items() if not k.startswith("GUARD_")}, "PYTHONPATH": str(ROOT)},
            )
            if result.returncode != 0:
                wrong.append(f"{example.source}: `{command}` exited {result.returncode}: {result.stderr.strip()[:300]}")
            elif example.expected is not None and not promised(example.expected, result.stdout):
                first = result.stdout.splitlines()[0] if result.stdout else "(nothing)"
                wrong.append(f"{example.source}: `{command}` printed {first!r}; its comment says {example.expected!r}")
    finally:
        demo.stop()
    return wrong


def test_every_example_of_the_quickstart_and_the_docs_home_prints_what_its_comment_says(tmp_path: Path) -> None:
    items = list(examples(page(INDEX), "docs/index.md"))
    commands = [example.command for example in items]
    quickstart = [example.command for example in examples(section(README.read_text(), "quickstart"), "README.md")]
    assert commands[: len(quickstart)] == quickstart, "docs/index.md includes the README's Quickstart first"
    assert sum(example.expected is not None for example in items) >= 10
    assert run_examples(items, tmp_path) == []


def test_a_stale_example_is_caught(tmp_path: Path) -> None:
    """The check itself: a promise the demo does not keep is reported."""
    fetch = f'curl -A "{CHROME}" -r 0-99 -o /dev/null -w "%{{http_code}}\\n" localhost:8000/tracks/1/stream'
    stale = [Example("guard demo", None, "stale"), Example(fetch, "206", "stale")]  # no session: 401
    wrong = run_examples(stale, tmp_path)
    assert len(wrong) == 1 and wrong[0].endswith("printed '401'; its comment says '206'"), wrong


def test_the_quickstart_is_two_commands_from_a_fresh_clone() -> None:
    blocks = sh_blocks(section(README.read_text(), "quickstart"))
    assert [len(block) for block in blocks[:2]] == [1, 1]
    assert blocks[0][0].endswith("guard demo") and blocks[1][0] == "bash scripts/test"


def test_generated_samples_and_tables_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_docs.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr


def test_the_readme_counts_the_catalogue_as_it_is() -> None:
    from guard.policy.rules import load_rules

    agents = len(load_rules(ROOT / "rules" / "default.yaml").catalogue.agents)
    said = re.search(r"catalogue of about (\d+) known agents", README.read_text())
    assert said and int(said.group(1)) == round(agents, -2), agents


def test_the_readme_stays_a_front_page() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 180
    assert not re.search(r"\b[0-9a-f]{7,40}\b", text), "commit hashes belong in git history"
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), "dated run notes belong in git history"


@pytest.mark.parametrize("name", ["GUARD_SESSION_KEY", "GUARD_BUDGET_KEY"])
def test_the_keys_are_named_where_people_look(name: str) -> None:
    for path in (README, ROOT / "docs" / "mounting.md", ROOT / "docs" / "deployment.md"):
        text = path.read_text()
        assert name in text, f"{path.name} does not name {name}"
        assert "guard keygen" in text, f"{path.name} does not say how to make one"
