"""Every shell command in README.md and docs/ is either executed here or skipped with a stated reason.

A fenced ``bash``/``sh``/``shell``/``console`` block must sit right under a marker line:

    <!-- docs-test: run -->            runs on the embedded default (sim world, CPU, no downloads) in seconds
    <!-- docs-test: skip REASON -->    e.g. "needs a GPU", "needs a SLURM cluster", "downloads from the hub"

The runnable blocks of one page run in order, each as a ``bash -eo pipefail`` script, from the root of a temporary copy of
the repository (so a later block can read what an earlier one wrote), with a temporary HOME, W&B offline and the hub
offline. Two rewrites keep them small and local:

* ``dataset.num_problems=4`` is appended to every ``python tts/main.py`` invocation (the last value of a key wins in
  Hydra, so a page may set its own count; sweeps stay tiny);
* install steps (``python -m venv``, activating a venv, ``pip install``) are dropped: the test runs in the environment
  those steps make, and ``.ci/run`` makes it afresh with the README's test command.

Skipped blocks are reported as pytest skips with their reason. ``pytest tests/test_docs.py -k README`` runs one page.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHELL_LANGS = {"bash", "sh", "shell", "console"}
MARKER = re.compile(r"^<!--\s*docs-test:\s*(run|skip)\b\s*(.*?)\s*-->$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
# an invocation ends at a control operator, a redirection (`2>&1`, `> log`) or a comment
MAIN = re.compile(r"(\bpython3?\s+tts/main\.py\b(?:(?!\s+\d*[<>&]|[&|;#<>]).)*)")
INSTALL_STEP = re.compile(
    r"^\s*(python3?\s+-m\s+venv\b|(\.|source)\s+\S*activate\b|pip3?\s+install\b|python3?\s+-m\s+pip\s+install\b)")
NUM_PROBLEMS = "dataset.num_problems=4"
BLOCK_TIMEOUT_S = 300
# Left out of the temporary copy: version control, environments and anything a previous run wrote.
COPY_IGNORE_AT_ROOT = {".git", "outputs", "multirun", "site", "wandb", "figs", "merged", ".wandb_runs", ".pytest_cache"}


@dataclass(frozen=True)
class Block:
    page: str  # path relative to the repository root
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    action: str | None  # "run", "skip", or None when the marker is missing
    reason: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def doc_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def fenced_blocks(path: Path) -> list[Block]:
    """All fenced code blocks of a Markdown file, with the marker line (if any) right above each."""
    page = path.relative_to(ROOT).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        body, j = [], i + 1
        while j < len(lines) and not re.match(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[j]):
            body.append(lines[j][indent:] if lines[j][:indent].isspace() else lines[j].lstrip())
            j += 1
        above = lines[i - 1].strip() if i > 0 else ""
        marker = MARKER.match(above)
        blocks.append(Block(page, i + 1, opening["lang"].lower(), "\n".join(body),
                            marker[1] if marker else None, marker[2] if marker else ""))
        i = j + 1
    return blocks


def shell_blocks() -> list[Block]:
    return [b for p in doc_pages() for b in fenced_blocks(p) if b.lang in SHELL_LANGS]


def commands_of(block: Block) -> str:
    """The script a block stands for: prompts and output removed (console), continuations joined, rewrites applied."""
    text = block.code
    if block.lang == "console":
        text = "\n".join(line[2:] for line in text.splitlines() if line.startswith("$ "))
    text = re.sub(r"\s*\\\n\s*", " ", text)
    script = []
    for line in text.splitlines():
        steps = [s for s in line.split("&&") if not INSTALL_STEP.match(s)]
        line = "&&".join(steps).strip()
        if line:
            script.append(MAIN.sub(_append_num_problems, line).rstrip())
    return "\n".join(script)


def _append_num_problems(match: re.Match) -> str:
    command = match[1].rstrip()
    return f"{command} {NUM_PROBLEMS}" + match[1][len(command):]  # keeps the blank before a following `|`


def test_every_shell_block_is_marked_and_every_fence_labelled():
    """An unmarked shell block would silently escape this test; an unlabelled fence could hide a command."""
    problems = []
    for page in doc_pages():
        for b in fenced_blocks(page):
            if not b.lang:
                problems.append(f"{b.where}: fence without a language (bash for commands, text for anything else)")
            elif b.lang in SHELL_LANGS and b.action is None:
                problems.append(f"{b.where}: no '<!-- docs-test: run -->' or '<!-- docs-test: skip REASON -->' "
                                "line right above this block")
            elif b.action == "skip" and not b.reason:
                problems.append(f"{b.where}: 'docs-test: skip' needs a reason")
    assert not problems, "\n".join(problems)


def test_ci_runs_the_readme_test_command():
    """The README's second command is what CI runs, verbatim."""
    readme = [b for b in fenced_blocks(ROOT / "README.md") if "python -m pytest" in b.code]
    assert readme, "README.md: no block with the test command (python -m pytest)"
    # a line as it is, or run in a subshell `( ... )` so that a failure anywhere in its `&&` list stops CI
    ci_lines = {line.strip().removeprefix("(").removesuffix(")") for line in
                (ROOT / ".ci" / "run").read_text().splitlines()}
    for b in readme:
        for line in b.code.splitlines():
            assert line.strip() in ci_lines, f"{b.where}: '{line.strip()}' is not a line of .ci/run"


def test_rewrites():
    """The two rewrites the runnable blocks go through."""
    block = Block("x.md", 1, "bash", "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && "
                  "python tts/main.py\npython tts/main.py -m n=4,16 \\\n    seed=0,1 | tail -1  # comment\n"
                  "python tts/main.py n=16 2>&1 | grep recorded", "run", "")
    assert commands_of(block).splitlines() == [
        f"python tts/main.py {NUM_PROBLEMS}", f"python tts/main.py -m n=4,16 seed=0,1 {NUM_PROBLEMS} | tail -1  # comment",
        f"python tts/main.py n=16 {NUM_PROBLEMS} 2>&1 | grep recorded"]
    console = Block("x.md", 1, "console", "$ python tts/main.py n=8\nprinted output\n$ ls outputs", "run", "")
    assert commands_of(console) == f"python tts/main.py n=8 {NUM_PROBLEMS}\nls outputs"


class PageRun:
    """The runnable blocks of one page, run in order in one temporary copy of the repository."""

    def __init__(self, blocks: list[Block], workdir: Path):
        self.blocks, self.done, self.failed = blocks, 0, None
        self.repo, self.home = workdir / "repo", workdir / "home"
        shutil.copytree(ROOT, self.repo, ignore=self._ignore)
        self.home.mkdir()
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        self.env = {**os.environ, "HOME": str(self.home), "PATH": path, "PYTHONPATH": str(self.repo),
                    "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1",
                    "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}

    @staticmethod
    def _ignore(directory: str, names: list[str]) -> set[str]:
        at_root = Path(directory) == ROOT
        return {n for n in names if n == "__pycache__" or n.endswith(".egg-info")
                or (at_root and (n in COPY_IGNORE_AT_ROOT or n.startswith(".venv")))}

    def run_through(self, block: Block) -> None:
        """Run every earlier block of the page that has not run yet, then this one."""
        while self.done <= self.blocks.index(block):
            current = self.blocks[self.done]
            if self.failed:
                pytest.skip(f"an earlier runnable block of this page failed ({self.failed})")
            self.done += 1
            script = commands_of(current)
            result = subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=self.repo, env=self.env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    timeout=BLOCK_TIMEOUT_S)
            if result.returncode != 0:
                self.failed = current.where
                pytest.fail(f"{current.where}: exit status {result.returncode}\n$ {script}\n"
                            f"{result.stdout[-4000:]}", pytrace=False)


BLOCKS = shell_blocks()


@pytest.fixture(scope="module")
def page_runs(tmp_path_factory):
    runs: dict[str, PageRun] = {}

    def get(page: str) -> PageRun:
        if page not in runs:
            runnable = [b for b in BLOCKS if b.page == page and b.action == "run"]
            runs[page] = PageRun(runnable, tmp_path_factory.mktemp(re.sub(r"\W", "_", page)))
        return runs[page]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[b.where for b in BLOCKS])
def test_documented_command(block, page_runs):
    if block.action != "run":
        pytest.skip(block.reason or "no docs-test marker (see test_every_shell_block_is_marked...)")
    page_runs(block.page).run_through(block)


def test_the_readme_wandb_sync_finds_every_offline_run_at_any_depth(tmp_path):
    """The README's upload command, with a stand-in `wandb` that records its arguments: every offline run of a sweep
    is passed, whether or not its job had extra overrides (one directory level deeper), reruns oldest first."""
    [block] = [b for b in fenced_blocks(ROOT / "README.md") if "wandb sync" in b.code]
    runs = ["multirun/synthetic/sim_sim/beam/n4_seed0/wandb/offline-run-20261201_100000-a",
            "multirun/synthetic/sim_sim/beam/n4_seed0/dataset.num_problems=2,prm.noise=2/wandb/offline-run-20261201_100000-b",
            "multirun/synthetic/sim_sim/beam/n4_seed0/dataset.num_problems=2,prm.noise=2/wandb/offline-run-20261202_090000-b",
            "multirun/math500/llama_rlhflow/dvts/n16_seed3/x=1/wandb/offline-run-20261201_100000-c"]
    for run in runs:
        (tmp_path / run / "files").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "wandb").write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a" >> "$SYNCED"; done\n')
    (bin_dir / "wandb").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SYNCED": str(tmp_path / "synced.txt")}
    subprocess.run(["bash", "-c", commands_of(block)], cwd=tmp_path, env=env, check=True)
    synced = (tmp_path / "synced.txt").read_text().split("\n")[:-1]
    assert synced[0] == "sync" and sorted(synced[1:]) == sorted(runs)
    deeper = [s for s in synced if "prm.noise=2" in s]
    assert deeper == sorted(deeper), "reruns of one run are synced oldest first"
