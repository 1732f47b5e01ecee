"""The README's command-line examples, run as written on `llamonitor demo` output
(real processes), and the demo's first impression."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
SECTIONS = ("Command line", "Reports: where the money and the time go")
# What a command prints when it found nothing (or failed): no README example may.
NOTHING = re.compile(r"No spans|not found|no store at|Traceback|^Error: ", re.M)


def _section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def readme_examples() -> list[str]:
    """Every ``llamonitor ...`` line of the README's bash blocks in SECTIONS,
    without its comment."""
    text = README.read_text(encoding="utf-8")
    lines: list[str] = []
    for title in SECTIONS:
        for block in re.findall(r"```bash\n(.*?)```", _section(text, title), re.S):
            for line in block.splitlines():
                command = line.split("  #", 1)[0].split(" # ", 1)[0].strip()
                if command.startswith("llamonitor "):
                    lines.append(command)
    return lines


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
    env["COLUMNS"] = "80"  # what a pipe or a narrow terminal gets
    return env


def _llamonitor(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llamonitor.cli", *args],
        cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120, check=False,
    )


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory where `llamonitor demo` ran, as the README's first line says."""
    cwd = tmp_path_factory.mktemp("readme")
    demo = _llamonitor(["demo"], cwd)
    assert demo.returncode == 0, demo.stderr
    return cwd


def test_the_readme_has_examples_to_run() -> None:
    """The parser finds the README's examples (so the next test cannot pass empty)."""
    examples = readme_examples()
    assert examples[0] == "llamonitor demo"
    assert any(e.startswith("llamonitor trace ") for e in examples)
    assert any("--session alice-1" in e for e in examples)
    assert sum(e.startswith("llamonitor report") for e in examples) >= 4


@pytest.mark.parametrize("example", readme_examples()[1:])
def test_every_readme_example_works_on_demo_output(demo_dir: Path, example: str) -> None:
    """Each example, typed as written after `llamonitor demo`, exits 0 and finds something."""
    args = shlex.split(example)[1:]
    result = _llamonitor(args, demo_dir)
    assert result.returncode == 0, f"{example}\n{result.stdout}\n{result.stderr}"
    shown = result.stdout + result.stderr
    assert not NOTHING.search(shown), f"{example}\n{shown}"
    if args[0] == "spool":  # nothing waits on disk after a demo: that is what it must say
        assert "Nothing spooled" in shown
        return
    assert result.stdout.strip() or "wrote" in result.stderr
    if "--json" in args:
        assert json.loads(result.stdout)["overview"]["spans"] > 0
    for name in ("--html", "--csv"):
        if name in args:
            written = demo_dir / args[args.index(name) + 1]
            assert written.stat().st_size > 1000


def test_the_readme_trace_sample_is_the_demos_example_trace(demo_dir: Path) -> None:
    """The trace the README shows is the one `llamonitor demo` picks (same seed, same ids)."""
    (line,) = [e for e in readme_examples() if e.startswith("llamonitor trace ")]
    prefix = shlex.split(line)[2]
    demo = _llamonitor(["demo", "--dir", "again", "--json"], demo_dir)
    assert demo.returncode == 0, demo.stderr
    summary = json.loads(demo.stdout)
    assert summary["example_trace_id"].startswith(prefix)
    assert summary["session_ids"][0] == "alice-1"
