"""Verifier diagnostics: the ProcessBench earliest-error measure, calibration (ECE) and discrimination (AUROC), checked
by hand on small cases and on sim sweeps whose PRM is perfect or carries no information."""

from __future__ import annotations

import functools
import itertools
import math
import shutil
import tempfile
import atexit
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, compose_config
from analysis.verifier import (_intervals, auroc, ece, load_processbench, processbench_scores, processbench_thresholds,
                               score_processbench, sim_first_wrong_step)

SAMPLE = REPO / "tests" / "data" / "processbench_sample.jsonl"


def test_earliest_error_is_right_only_between_the_wrong_step_and_the_lowest_step_before_it():
    steps = [[0.9, 0.8], [0.9, 0.2], [0.3, 0.9], [0.7, 0.6, 0.1]]
    labels = np.array([-1, 1, 0, 1])  # correct; wrong at 1; wrong at 0; wrong at 1 (but step 2 scored lowest)
    lo, hi = _intervals(steps, labels.astype(float))
    erroneous = labels >= 0
    at = {t: processbench_scores(lo, hi, erroneous, [t]) for t in (0.5, 0.65, 0.85)}
    # 0.5: correct kept (min 0.8); [0.9,0.2] flags step 1; [0.3,..] step 0; [0.7,0.6,0.1] flags step 2, not 1
    assert at[0.5]["acc_correct"][0] == 1.0 and at[0.5]["acc_erroneous"][0] == pytest.approx(2 / 3)
    assert at[0.65]["acc_erroneous"][0] == 1.0 and at[0.65]["f1"][0] == 1.0  # 0.6 < 0.65 <= 0.7
    # 0.85 flags the correct solution's 0.8 step: accuracy on correct ones 0, so F1 0 whatever the rest
    assert at[0.85]["acc_correct"][0] == 0.0 and at[0.85]["f1"][0] == 0.0


def test_auroc_is_the_pairwise_win_rate_and_ece_the_calibration_gap():
    rng = np.random.default_rng(0)
    scores = rng.random(60).round(1)  # ties, counted one half
    positive = rng.random(60) < scores
    pairs = [(s, t) for s, p in zip(scores, positive) if p for t, q in zip(scores, positive) if not q]
    brute = np.mean([1.0 if s > t else 0.5 if s == t else 0.0 for s, t in pairs])
    assert auroc(scores, positive) == pytest.approx(brute)
    assert math.isnan(auroc(scores, np.ones(60, bool)))
    # a score that is exactly each bin's accuracy has no calibration error; an overconfident one has its gap
    calibrated = np.repeat([0.25, 0.75], 4)
    outcomes = np.array([1, 0, 0, 0, 1, 1, 1, 0], bool)
    assert ece(calibrated, outcomes) == pytest.approx(0.0)
    assert ece(np.full(8, 0.95), outcomes) == pytest.approx(0.95 - 0.5)


def test_sim_ground_truth_is_what_the_simulated_prm_checks():
    from tts.prms.sim import SimPRM, SimPRMConfig

    rows = load_processbench(SAMPLE)
    assert set(rows.label) >= {-1, 0} and (rows.label > 0).any()
    assert [sim_first_wrong_step(p, s) for p, s in zip(rows.problem, rows.steps)] == list(rows.label)
    assert sim_first_wrong_step("not a synthetic problem", ["a step"]) is None
    # a perfect verifier (no noise, no overlooked error) finds every earliest error and flags no correct solution
    table = score_processbench(rows, SimPRM(SimPRMConfig(noise=0.0, miss_prob=0.0)))
    scores = processbench_scores(table.lo.to_numpy(), table.hi.to_numpy(), table.label.to_numpy() >= 0, [0.5])
    assert scores["f1"][0] == 1.0


@pytest.mark.parametrize("content,message", [
    ('{"problem": "p", "steps": ["a"], "label": 3}\n', "row 1: column 'label' must be -1 or a step index < 1"),
    ('{"problem": "p", "steps": ["a"], "label": -1}\n{"problem": "q", "label": 0}\n', "row 2: no column 'steps'"),
    ('{"problem": "p", "steps": [], "label": -1}\n', "row 1: column 'steps' must be a non-empty list"),
    ("not json\n", "row 1: not JSON"),
])
def test_malformed_processbench_rows_are_refused_in_one_line(tmp_path, content, message):
    path = tmp_path / "bench.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as error:
        load_processbench(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


@functools.lru_cache(maxsize=None)
def verifier_sweep(prm: tuple[str, ...]) -> Path:
    """best-of-N and beam at n=4, seed 0, plus a reference pool, on 30 problems, under the given PRM overrides."""
    from tts.pipeline import run

    root = Path(tempfile.mkdtemp(prefix="tts-verifier-sweep-"))
    atexit.register(shutil.rmtree, root, True)
    for strategy, n, seed in (("best_of_n", 4, 0), ("beam", 4, 0), ("best_of_n", 8, 100)):
        cfg = compose_config([f"strategy={strategy}", f"n={n}", f"seed={seed}", "dataset.num_problems=30",
                              "logger=none", *prm])
        run(cfg, run_dir=root / f"{strategy}/n{n}_seed{seed}")
    return root


def _measures(prm: tuple[str, ...], tmp_path: Path, capsys) -> pd.DataFrame:
    from analysis.__main__ import main

    out = tmp_path / "_".join(prm).replace(".", "_").replace("=", "-")
    assert main(["verifier", str(verifier_sweep(prm)), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "F1" in printed and "ECE" in printed and "AUROC" in printed and "absolute_bin" in printed
    for name in ("verifier_oracle.png", "verifier_absolute.png", "verifier_gain.csv", "verifier_reliability.csv"):
        assert (out / name).stat().st_size > 0, name
    return pd.read_csv(out / "verifier.csv", dtype={"bin": str})


def test_a_perfect_prm_finds_every_error_and_a_blind_one_none(tmp_path, capsys):
    perfect = _measures(("prm.noise=0", "prm.miss_prob=0"), tmp_path, capsys).set_index(["bins", "bin"])
    assert perfect.loc[("all", "all"), "f1_heldout"] == 1.0
    assert perfect.loc[("all", "all"), "auroc"] > 0.97
    blind = _measures(("prm.discrimination=0", "prm.noise=2"), tmp_path, capsys).set_index(["bins", "bin"])
    assert abs(blind.loc[("all", "all"), "auroc"] - 0.5) < 0.1
    assert blind.loc[("all", "all"), "f1_heldout"] < 0.5
    # per bin: every oracle and absolute bin of the pool is measured, and the counts add up
    for scheme in ("oracle_bin", "absolute_bin"):
        assert blind.loc[scheme, "completions"].sum() == blind.loc[("all", "all"), "completions"]


def test_search_gain_sits_beside_the_prm_discrimination_in_each_bin(tmp_path, capsys):
    _measures(("prm.noise=0", "prm.miss_prob=0"), tmp_path, capsys)
    out = tmp_path / "prm_noise-0_prm_miss_prob-0"
    gain = pd.read_csv(out / "verifier_gain.csv", dtype={"bin": str})
    assert set(gain.variant) == {"beam"} and set(gain.budget) == {4}
    row = gain[(gain.bins == "all") & (gain.aggregation == "weighted")].iloc[0]
    assert row.gain == pytest.approx(row.accuracy - row.best_of_n) and row.prm_auroc > 0.97


def test_processbench_thresholds_are_held_out_by_problem():
    rows = load_processbench(SAMPLE)
    from tts.prms.sim import SimPRM, SimPRMConfig

    table = score_processbench(rows, SimPRM(SimPRMConfig()))
    assert set(table.fold) == {0, 1}
    for fold, other in itertools.permutations((0, 1)):
        # each half's threshold is the best F1 of the other half alone
        chosen = table[table.fold == fold].threshold_heldout.iloc[0]
        alone = processbench_thresholds(table[table.fold == other].drop(
            columns=["lo", "hi", "fold", "threshold_heldout", "threshold_swept"])).threshold_swept.iloc[0]
        assert chosen == alone


def test_processbench_file_through_the_dataset_config_and_cli(tmp_path, capsys):
    from analysis.__main__ import main

    out = tmp_path / "pb"
    assert main(["verifier", "--out", str(out), "--processbench", str(SAMPLE), "--prm", "prm=sim prm.noise=0 prm.miss_prob=0"]) == 0
    table = pd.read_csv(out / "processbench.csv")
    assert table.f1_swept.iloc[0] == 1.0 and table.completions.iloc[0] == len(load_processbench(SAMPLE))
    assert main(["verifier", "--out", str(out), "--processbench", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
