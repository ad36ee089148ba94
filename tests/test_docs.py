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

Worked examples (docs/architecture.md): a heading right under ``<!-- docs-test: example NAME -->`` opens an example,
which runs in its own temporary copy. Before its commands, every code block of the section titled with a path
(```` ```python title="tts/search/x.py" ````) is saved there, a title ending in ``(add at the end)`` appending to an
existing file; afterwards ``test_worked_example[NAME]`` checks what the commands printed and wrote (``EXAMPLES``) and
that the titled files are the only ones the example added or changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHELL_LANGS = {"bash", "sh", "shell", "console"}
MARKER = re.compile(r"^<!--\s*docs-test:\s*(run|skip)\b\s*(.*?)\s*-->$")
EXAMPLE_MARKER = re.compile(r"^<!--\s*docs-test:\s*example\s+(\w+)\s*-->$")
HEADING = re.compile(r"^(#{1,6})\s")
TITLE = re.compile(r'\btitle="([^"]+)"')
APPEND = " (add at the end)"
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
# an invocation ends at a control operator, a redirection (`2>&1`, `> log`) or a comment
MAIN = re.compile(r"(\bpython3?\s+tts/main\.py\b(?:(?!\s+\d*[<>&]|[&|;#<>]).)*)")
INSTALL_STEP = re.compile(
    r"^\s*(python3?\s+-m\s+venv\b|(\.|source)\s+\S*activate\b|pip3?\s+install\b|python3?\s+-m\s+pip\s+install\b)")
NUM_PROBLEMS = "dataset.num_problems=4"
BLOCK_TIMEOUT_S = 300
# Left out of the temporary copy: version control, environments and anything a previous run wrote.
COPY_IGNORE_AT_ROOT = {".git", "outputs", "multirun", "site", "wandb", "figs", "merged", ".wandb_runs", ".pytest_cache",
                       ".mypy_cache", ".ruff_cache", ".import_linter_cache"}


@dataclass(frozen=True)
class Block:
    page: str  # path relative to the repository root
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    action: str | None  # "run", "skip", or None when the marker is missing
    reason: str
    title: str = ""  # a file's path, for the blocks of a worked example
    example: str | None = None  # the worked example whose section holds the block

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def unit(self) -> str:
        """What runs in one temporary copy: a page, or one worked example of it."""
        return f"{self.page}#{self.example}" if self.example else self.page


def doc_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def fenced_blocks(path: Path) -> list[Block]:
    """All fenced code blocks of a Markdown file, with the marker line (if any) right above each."""
    page = path.relative_to(ROOT).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    pending, example = None, None  # an example marker waiting for its heading; the open example (name, level)
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            heading, marked = HEADING.match(lines[i]), EXAMPLE_MARKER.match(lines[i].strip())
            if marked:
                pending = marked[1]
            elif heading and pending:
                example, pending = (pending, len(heading[1])), None
            elif heading and example and len(heading[1]) <= example[1]:
                example = None
            i += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        body, j = [], i + 1
        while j < len(lines) and not re.match(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[j]):
            body.append(lines[j][indent:] if not lines[j][:indent].strip() else lines[j].lstrip())
            j += 1
        above = lines[i - 1].strip() if i > 0 else ""
        marker = MARKER.match(above)
        title = TITLE.search(lines[i])
        blocks.append(Block(page, i + 1, opening["lang"].lower(), "\n".join(body),
                            marker[1] if marker else None, marker[2] if marker else "",
                            title[1] if title else "", example[0] if example else None))
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
    """The runnable blocks of one page (or of one worked example), run in order in one temporary copy of the
    repository, after the example's titled files are saved there; `output` is everything the blocks printed."""

    def __init__(self, blocks: list[Block], workdir: Path, files: list[Block] = ()):
        self.blocks, self.done, self.failed, self.output = blocks, 0, None, ""
        self.repo, self.home = workdir / "repo", workdir / "home"
        shutil.copytree(ROOT, self.repo, ignore=self._ignore)
        self.before = tree_digests(self.repo)
        for block in files:
            save_example_file(self.repo, block)
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
            self.output += f"$ {script}\n{result.stdout}"
            if result.returncode != 0:
                self.failed = current.where
                pytest.fail(f"{current.where}: exit status {result.returncode}\n$ {script}\n"
                            f"{result.stdout[-4000:]}", pytrace=False)


    def changes(self) -> dict[str, str]:
        """Files added, changed or removed since the copy was made, outside what runs write (`COPY_IGNORE_AT_ROOT`,
        caches): path -> "added" / "changed" / "removed"."""
        after = tree_digests(self.repo)
        changes = {path: "added" if path not in self.before else "changed"
                   for path, digest in after.items() if self.before.get(path) != digest}
        return changes | {path: "removed" for path in self.before.keys() - after.keys()}


def tree_digests(repo: Path) -> dict[str, str]:
    """sha256 of every file of a copy of the repository, by relative path, leaving out what runs and tools write."""
    digests = {}
    for path in sorted(repo.rglob("*")):
        relative = path.relative_to(repo)
        if (relative.parts[0] in COPY_IGNORE_AT_ROOT or "__pycache__" in relative.parts
                or any(part.endswith(".egg-info") for part in relative.parts) or not path.is_file()):
            continue
        digests[relative.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def example_file(block: Block) -> tuple[str, bool]:
    """(path, whether the block is added at the end of an existing file) from a titled block's title."""
    return block.title.removesuffix(APPEND), block.title.endswith(APPEND)


def save_example_file(repo: Path, block: Block) -> None:
    """A titled block of a worked example, saved as a reader would: a new file, or added at the end of one."""
    path, append = example_file(block)
    target = repo / path
    if append:
        assert target.is_file(), f"{block.where}: '{path}' does not exist, so nothing can be added at its end"
        target.write_text(target.read_text(encoding="utf-8") + "\n\n" + block.code + "\n", encoding="utf-8")
    else:
        assert not target.exists(), f"{block.where}: '{path}' exists; title it '{path}{APPEND}' or choose a new path"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.code + "\n", encoding="utf-8")


BLOCKS = shell_blocks()
ALL_BLOCKS = [b for p in doc_pages() for b in fenced_blocks(p)]


@pytest.fixture(scope="module")
def page_runs(tmp_path_factory):
    runs: dict[str, PageRun] = {}

    def get(unit: str) -> PageRun:
        if unit not in runs:
            runnable = [b for b in BLOCKS if b.unit == unit and b.action == "run"]
            files = [b for b in ALL_BLOCKS if b.unit == unit and b.example and b.title]
            runs[unit] = PageRun(runnable, tmp_path_factory.mktemp(re.sub(r"\W", "_", unit)), files)
        return runs[unit]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[b.where for b in BLOCKS])
def test_documented_command(block, page_runs):
    if block.action != "run":
        pytest.skip(block.reason or "no docs-test marker (see test_every_shell_block_is_marked...)")
    page_runs(block.unit).run_through(block)


# -- the worked examples of docs/architecture.md ----------------------------------------------------------------------


def _metrics(repo: Path, pattern: str) -> dict:
    found = sorted(repo.glob(f"{pattern}/**/metrics.json")) + sorted(repo.glob(f"{pattern}/metrics.json"))
    assert found, f"no metrics.json under {pattern}"
    return json.loads(found[0].read_text())


def _check_strategy(repo: Path, output: str) -> None:
    ladder = _metrics(repo, "outputs/synthetic/sim_sim/temperature_ladder/n4_seed0")
    assert {"acc/weighted_voters@4", "acc/maj_unfiltered@4", "acc/naive@4"} <= ladder.keys()
    assert "[(0.4, True), (0.6667, True), (0.9333, False), (1.2, False)]" in output  # temperatures and votes
    for error in ("config key 'strategy.spread': must be >= 0 and <= strategy.temperature (0.8)",
                  "config key 'strategy.spread': not a knob of BeamConfig (strategy); it is a knob of "
                  "strategy=temperature_ladder",
                  "config key 'strategy.sprad': not a known key; did you mean 'strategy.spread'?"):
        assert f"Error: {error}" in output
    assert output.count("exit status 2") == 3
    assert "acc/weighted_voters@16" in _metrics(repo, "multirun/synthetic/sim_sim/temperature_ladder/n16_seed0")
    # the aggregation applies only where the strategy marks who votes
    assert "acc/weighted_voters@16" not in _metrics(repo, "multirun/synthetic/sim_sim/best_of_n/n16_seed0")


def _check_backend(repo: Path, output: str) -> None:
    metrics = _metrics(repo, "outputs/synthetic/sim_sim/best_of_n/n4_seed0")  # the one run of this copy
    assert metrics["tokens/generated"] == metrics["problems"] * 4 * 4  # 4 samples of 4 tokens per problem
    assert "acc/maj@4" in metrics and "acc/deepconf10@4" not in metrics  # no log-probabilities, no confidence
    assert "config key 'model.backend.skill': not a knob of NumberPickerConfig" in output
    assert "exit status 2" in output


def _check_aggregation(repo: Path, output: str) -> None:
    for strategy in ("best_of_n", "beam"):
        assert "acc/shortest@4" in _metrics(repo, f"multirun/synthetic/sim_sim/{strategy}/n4_seed0")
    assert re.search(r"accuracy@4: .*shortest \d", output)  # the console line
    table = (repo / "figs" / "accuracy_vs_n.csv").read_text().splitlines()
    assert {line.split(",")[1] for line in table if ",shortest," in line} == {"best_of_n", "beam"}


def _check_figure(repo: Path, output: str) -> None:
    for suffix in (".png", ".pdf"):
        assert (repo / "figs" / f"tokens_by_level{suffix}").stat().st_size > 1000
    assert "figs/tokens_by_level.png" in output and "lies over" not in output  # no layout warning


@dataclass(frozen=True)
class Example:
    files: dict[str, str]  # path -> "added" / "changed": everything the example may touch
    check: Callable[[Path, str], None]  # (the copy of the repository, what the commands printed)


EXAMPLES = {
    # the measure: a strategy that needs a new aggregation is its module, its YAML and one function
    "strategy": Example({"tts/search/temperature_ladder.py": "added", "conf/strategy/temperature_ladder.yaml": "added",
                         "tts/scoring.py": "changed"}, _check_strategy),
    "backend": Example({"tts/backends/number_picker.py": "added", "conf/model/backend/number_picker.yaml": "added"},
                       _check_backend),
    "aggregation": Example({"tts/scoring.py": "changed"}, _check_aggregation),
    "figure": Example({"analysis/tokens_by_level.py": "added"}, _check_figure),
}
ARCHITECTURE = "docs/architecture.md"


def test_every_worked_example_is_checked():
    """Each example section of the page has an entry in EXAMPLES (and the reverse), commands that run, and titled
    files that are exactly the files it declares; a titled block outside an example would never be saved."""
    blocks = [b for b in ALL_BLOCKS if b.page == ARCHITECTURE]
    assert {b.example for b in blocks if b.example} == EXAMPLES.keys()
    for name, example in EXAMPLES.items():
        titled = {example_file(b) for b in blocks if b.example == name and b.title}
        assert {path: "changed" if append else "added" for path, append in titled} == example.files, name
        assert any(b.example == name and b.action == "run" for b in BLOCKS), f"example {name}: no command to run"
    strays = [b.where for b in ALL_BLOCKS if b.title and not b.example]
    assert not strays, f"blocks titled with a path outside a worked example: {strays}"


@pytest.mark.slow
@pytest.mark.parametrize("name", EXAMPLES)
def test_worked_example(name, page_runs):
    run = page_runs(f"{ARCHITECTURE}#{name}")
    run.run_through(run.blocks[-1])
    assert run.changes() == EXAMPLES[name].files, "the example touched other files"
    EXAMPLES[name].check(run.repo, run.output)


def test_the_architecture_page_names_every_package_module_and_component():
    """docs/architecture.md shows what exists: every package and module of tts/ and analysis/, every option of the
    component groups, every registered aggregation and every strategy trait."""
    from tts.config.schema import TRAITS
    from tts.scoring import registered

    page = (ROOT / ARCHITECTURE).read_text(encoding="utf-8")
    names = {p.name for p in (ROOT / "tts").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    names |= {p.stem for root in ("tts", "analysis") for p in (ROOT / root).rglob("*.py")
              if p.stem not in ("__init__", "__main__")}
    for group in ("strategy", "model/backend", "prm", "prm/engine"):
        names |= {p.stem for p in (ROOT / "conf" / group).glob("*.yaml")}
    names |= {a.name for a in registered()} | set(TRAITS)
    missing = sorted(name for name in names if not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", page))
    assert not missing, f"{ARCHITECTURE} does not name: {missing}"


def test_the_architecture_page_lists_the_strategies_of_each_trait_as_they_declare_it():
    """The trait table (`| `trait` | meaning | strategies |`) says which strategies declare each trait, as their
    config classes do."""
    from tts.config.keys import option_schemas
    from tts.config.schema import TRAITS

    page = (ROOT / ARCHITECTURE).read_text(encoding="utf-8")
    for trait in TRAITS:
        row = re.search(rf"^\| `{trait}` \|.*\| ([\w, ]+) \|$", page, re.M)
        assert row, f"{ARCHITECTURE}: no row for the trait {trait}"
        declared = {name for name, schema in option_schemas("strategy").items() if schema.traits()[trait]}
        assert set(row[1].replace(" ", "").split(",")) == declared, trait


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
