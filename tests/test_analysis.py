"""Analysis: difficulty bins, cross-validated compute-optimal selection, the sweep loader, the CLI's figures."""

from __future__ import annotations

import atexit
import functools
import json
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import compose_config
from analysis.compute_optimal import CV, IN_SAMPLE, compute_optimal, fold_assignment, method_name, select_per_bin
from analysis.difficulty import (POOL_COMMAND, NoReferencePool, absolute_bins, add_bins, assign_roles, parse_pool,
                                 parse_thresholds, problem_difficulty, quantile_bins, reference_pool)
from analysis.runs import accuracy_table, download_wandb_runs, load_local, load_wandb, long_points
from analysis.report import analyse_setting, parse_references, with_roles
from tts.store.readers import find_run_dirs

# The tiny sweep stands in for strategies: best-of-N at two temperatures is two "variants" of one strategy.
from tts.store.writer import RunDirectory

# The tiny sweep stands in for strategies: best-of-N at two temperatures is two "variants" of one strategy.
TEMPERATURES = (0.6, 1.0)


@functools.lru_cache(maxsize=None)
def tiny_sweep() -> Path:
    """A real sim sweep (2 temperatures x n=4,8 x seeds 0,1, 20 problems), built once per test session.

    Laid out like a Hydra multirun so the loader's recursive search is exercised.
    """
    from tts.pipeline import run

    root = Path(tempfile.mkdtemp(prefix="tts-analysis-sweep-"))
    atexit.register(shutil.rmtree, root, True)
    for temperature in TEMPERATURES:
        for n in (4, 8):
            for seed in (0, 1):
                cfg = compose_config([f"n={n}", f"seed={seed}", "dataset.num_problems=20", "logger=none",
                                      f"strategy.temperature={temperature}"])
                run(cfg, run_dir=root / f"synthetic/sim_sim/best_of_n/n{n}_seed{seed}/t={temperature}")
    # the reference pool: best-of-N kept apart by its seed (>= 100), never scored
    cfg = compose_config(["n=16", "seed=100", "dataset.num_problems=20", "logger=none", "strategy.temperature=1.0"])
    run(cfg, run_dir=root / "synthetic/sim_sim/best_of_n/n16_seed100/t=1.0")
    return root


@functools.lru_cache(maxsize=None)
def tiny_sweep_without_pool() -> Path:
    """The tiny sweep's candidate runs only (no reference pool)."""
    root = Path(tempfile.mkdtemp(prefix="tts-analysis-nopool-"))
    atexit.register(shutil.rmtree, root, True)
    shutil.copytree(tiny_sweep(), root, dirs_exist_ok=True)
    shutil.rmtree(root / "synthetic/sim_sim/best_of_n/n16_seed100")
    return root


# -- difficulty bins ------------------------------------------------------------------------------------------------


def test_quintiles_of_distinct_values_put_the_easiest_fifth_in_bin_1():
    values = pd.Series(np.arange(20) / 19.0)  # pass@1: higher is easier
    ids = pd.Series([f"p{i}" for i in range(20)])
    bins = quantile_bins(values, ids)
    assert list(bins) == [5] * 4 + [4] * 4 + [3] * 4 + [2] * 4 + [1] * 4
    # the model-bin direction (higher score = easier) is the same rule; reversing it flips the bins
    assert list(quantile_bins(values, ids, higher_is_easier=False)) == [6 - b for b in bins]


def test_split_ties_give_equal_bins_independent_of_row_order():
    # 8 problems solved every time (a tie across the bin 1 / bin 2 edge), 12 distinct harder ones
    values = pd.Series([1.0] * 8 + list(np.linspace(0.0, 0.9, 12)))
    ids = pd.Series([f"id{i}" for i in range(20)])
    bins = quantile_bins(values, ids, ties="split")
    assert sorted(bins.value_counts().tolist()) == [4] * 5
    assert set(bins[:8]) == {1, 2}  # the tie group is split over the two easiest bins
    shuffled = np.random.default_rng(0).permutation(20)
    again = quantile_bins(values.iloc[shuffled].reset_index(drop=True), ids.iloc[shuffled].reset_index(drop=True))
    assert dict(zip(ids.iloc[shuffled], again)) == dict(zip(ids, bins))


def test_grouped_ties_share_a_bin_and_missing_values_get_none():
    values = pd.Series([1.0] * 8 + list(np.linspace(0.0, 0.9, 12)) + [np.nan])
    ids = pd.Series([f"id{i}" for i in range(21)])
    bins = quantile_bins(values, ids, ties="group")
    assert set(bins[:8]) == {1}  # average rank 3.5 of 20 lies in the first fifth
    assert (bins == 2).sum() == 0  # ... which leaves bin 2 empty: the documented cost of keeping ties together
    assert pd.isna(bins.iloc[20])
    assert bins[8:20].is_monotonic_decreasing


def _hand_table():
    """Two reference best-of-N runs (n=4 with seeds 100 and 101, n=2 with seed 100), and candidate runs (best-of-N
    seed 0, beam) on three problems."""
    rows = []
    for variant, strategy, n, seed, pass1, score in [
        ("best_of_n", "best_of_n", 4, 100, [1.0, 0.5, 0.0], [0.9, 0.1, 0.5]),
        ("best_of_n", "best_of_n", 4, 101, [0.5, 0.5, 0.0], [0.7, 0.3, 0.4]),
        ("best_of_n", "best_of_n", 2, 100, [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]),
        ("best_of_n", "best_of_n", 8, 0, [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]),
        ("beam", "beam", 8, 0, [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]),
    ]:
        for uid, p, s in zip("abc", pass1, score):
            rows.append({"setting": "s", "variant": variant, "strategy": strategy, "n": n, "seed": seed,
                         "run_id": f"{variant}|{n}|{seed}", "unique_id": uid, "pass@1": p, "mean_score": s,
                         "completions": n})
    return pd.DataFrame(rows)


def test_reference_pool_is_kept_apart_by_seed_and_its_largest_n_is_pooled():
    table = _hand_table()
    roles = assign_roles(table)
    assert set(table[roles == "reference"].seed) == {100, 101}  # best-of-N seed 0 and beam are candidates
    pool = reference_pool(table)
    assert set(pool.n) == {4} and set(pool.seed) == {100, 101} and set(pool.strategy) == {"best_of_n"}
    difficulty = problem_difficulty(table, num_bins=3).set_index("unique_id")
    assert difficulty.pass1.to_dict() == {"a": 0.75, "b": 0.5, "c": 0.0}
    assert difficulty.mean_score.round(6).to_dict() == {"a": 0.8, "b": 0.2, "c": 0.45}
    assert difficulty.oracle_bin.to_dict() == {"a": 1, "b": 2, "c": 3}
    assert difficulty.model_bin.to_dict() == {"a": 1, "c": 2, "b": 3}
    assert difficulty.absolute_bin.to_dict() == {"a": 1, "b": 2, "c": 3}  # easy > 0.5 >= medium >= 0.1 > hard
    # candidates take the pool's absolute bin: "c" is hard for the pool though every candidate solved it
    binned = add_bins(table, num_bins=3).set_index("run_id")
    assert binned.loc["beam|8|0"].set_index("unique_id").absolute_bin.to_dict() == {"a": 1, "b": 2, "c": 3}
    # an explicit pool: those runs (any seed) are the reference, and no longer candidates
    explicit = ("best_of_n", 8)
    assert problem_difficulty(table, reference=explicit, num_bins=3).set_index("unique_id").pass1["c"] == 1.0
    binned = add_bins(table, reference=explicit, num_bins=3)
    assert set(binned.run_id) == {"beam|8|0", "best_of_n|4|100", "best_of_n|4|101", "best_of_n|2|100"}
    assert parse_pool("best_of_n:256") == ("best_of_n", 256)
    assert parse_pool("best_of_n (temperature=1.0):256:100,101") == ("best_of_n (temperature=1.0)", 256, (100, 101))
    with pytest.raises(ValueError, match="VARIANT:N"):
        parse_pool("best_of_n")


def test_absolute_bins_use_fixed_thresholds_whatever_the_other_problems():
    values = pd.Series([0.9, 0.51, 0.5, 0.3, 0.1, 0.09, 0.0, np.nan])
    assert absolute_bins(values).tolist() == [1, 1, 2, 2, 2, 3, 3, pd.NA]
    # unlike quantiles, a dataset of easy problems has no hard bin at all
    assert set(absolute_bins(pd.Series([0.9, 0.8, 0.95, 0.7]))) == {1}
    assert absolute_bins(values, (0.8, 0.4, 0.2)).tolist() == [1, 2, 2, 3, 4, 4, 4, pd.NA]
    assert parse_thresholds(None) == (0.5, 0.1) and parse_thresholds("0.8,0.4,0.2") == (0.8, 0.4, 0.2)
    for bad in ("0.1,0.5", "0.5,0.5", "1.5", "easy"):
        with pytest.raises(ValueError, match="--absolute-thresholds"):
            parse_thresholds(bad)


def test_without_a_pool_oracle_and_model_bins_are_refused_with_the_command_that_makes_one():
    candidates = _hand_table().query("seed < 100")
    with pytest.raises(NoReferencePool, match=re.escape(POOL_COMMAND)):
        problem_difficulty(candidates)
    assert POOL_COMMAND == "python tts/main.py -m strategy=best_of_n n=256 seed=100"


def _identical_candidates(seed: int, problems: int = 1000, n: int = 3, pool_n: int = 16):
    """Two statistically identical candidates (same per-problem success probability, independent samples) and an
    independent best-of-N reference pool, as a per-problem table like `analysis.runs` builds. As in a real run, a
    candidate's pass@1 and its prediction come from the same samples (here: the majority of its n samples)."""
    rng = np.random.default_rng(seed)
    p_solve = rng.beta(0.7, 0.7, problems)  # per-problem chance that one sample is right
    ids = [f"q{i}" for i in range(problems)]
    rows = []
    for variant, strategy, runs_n, run_seed in [("A", "beam", n, 0), ("B", "dvts", n, 0),
                                                ("best_of_n", "best_of_n", pool_n, 100)]:
        samples = rng.random((problems, runs_n)) < p_solve[:, None]
        correct = (2 * samples.sum(axis=1) > runs_n).astype(float)
        for uid, right, c in zip(ids, samples.mean(axis=1), correct):
            row = {"setting": "s", "run_id": f"{variant}|{run_seed}", "variant": variant, "strategy": strategy,
                   "n": runs_n, "seed": run_seed, "unique_id": uid, "level": None, "completions": runs_n,
                   "pass@1": right, "mean_score": right + rng.normal(0, 0.1), "tokens_generated": 100.0,
                   "tokens_prm": 0.0}
            for agg in ("naive", "weighted", "maj"):
                row[f"{agg}@{runs_n}"] = c
            rows.append(row)
    return pd.DataFrame(rows)


def test_identical_candidates_gain_nothing_from_honest_bins_and_much_from_leaky_ones():
    """The compute-optimal curve of two identical strategies may not beat the better one beyond noise; bins made
    from the candidates' own samples (the old default without best-of-N runs) do, cross-validated or not."""
    honest_gain, leaky_gain, leaky_in_sample_gain = [], [], []
    for seed in range(4):
        table = _identical_candidates(seed)
        best = table[table.seed < 100].groupby("variant")["weighted@3"].mean().max()
        points = long_points(add_bins(table), subsample=False)
        curves, _ = compute_optimal(points, bins=["oracle_bin"])
        cv = curves.set_index("method").accuracy
        honest_gain.append(cv[method_name("oracle_bin", CV)] - best)
        # leaky: the bins come from candidate A's own samples, then both candidates are selected and scored
        candidates = table[table.seed < 100]
        leaky_bins = problem_difficulty(candidates.assign(role=np.where(candidates.variant == "A", "reference",
                                                                         "candidate")))
        leaky_points = long_points(candidates.merge(leaky_bins[["setting", "unique_id", "oracle_bin"]]),
                                   subsample=False)
        leaky, _ = compute_optimal(leaky_points, bins=["oracle_bin"])
        leaky = leaky.set_index("method").accuracy
        leaky_gain.append(leaky[method_name("oracle_bin", CV)] - best)
        leaky_in_sample_gain.append(leaky[method_name("oracle_bin", IN_SAMPLE)] - best)
    noise = 2 * np.sqrt(0.25 / 1000)  # sampling noise: two standard errors of an accuracy on 1000 problems
    assert max(honest_gain) < noise and np.mean(honest_gain) < noise / 2
    assert min(leaky_in_sample_gain) > 1.5 * noise and min(leaky_gain) > 1.5 * noise


# -- compute-optimal selection ----------------------------------------------------------------------------------------


def test_cross_validation_does_not_reward_picking_the_luckiest_of_many_noise_candidates():
    rng = np.random.default_rng(0)
    problems = [f"p{i}" for i in range(200)]
    # 40 candidates that are all coin flips: any "best" one is best by luck
    matrix = pd.DataFrame(rng.random((200, 40)) < 0.5, index=problems, columns=[f"c{i}" for i in range(40)]).astype(float)
    bins = pd.Series(rng.integers(1, 6, 200), index=problems).astype(float)
    cv, in_sample, _ = select_per_bin(matrix, bins)
    assert in_sample.mean() > 0.6  # the in-sample pick looks much better than chance ...
    assert abs(cv.mean() - 0.5) < 0.06  # ... the cross-validated estimate does not
    assert cv.mean() < in_sample.mean() - 0.08


def test_per_bin_selection_finds_the_strategy_that_wins_each_bin():
    problems = [f"p{i}" for i in range(40)]
    easy = np.arange(40) < 20
    matrix = pd.DataFrame({"A": easy.astype(float), "B": (~easy).astype(float)}, index=problems)
    bins = pd.Series(np.where(easy, 1.0, 2.0), index=problems)
    cv, in_sample, selections = select_per_bin(matrix, bins)
    assert cv.mean() == 1.0 and in_sample.mean() == 1.0  # no single strategy gets more than 0.5
    chosen = {(s["bin"], s["fold"]): s["selected"] for s in selections}
    assert chosen[(1, "A")] == chosen[(1, "B")] == "A" and chosen[(2, "A")] == chosen[(2, "B")] == "B"


def test_folds_are_balanced_within_each_bin_and_reproducible():
    ids = pd.Series([f"q{i}" for i in range(31)])
    bins = pd.Series([1.0] * 11 + [2.0] * 20)
    folds = fold_assignment(ids, bins)
    assert folds[:11].sum() in (5, 6) and folds[11:].sum() == 10
    assert folds.equals(fold_assignment(ids, bins)) and not folds.equals(fold_assignment(ids, bins, salt=1))


# -- loading a real sweep --------------------------------------------------------------------------------------------


def test_loader_reads_a_sim_sweep_into_tidy_tables_consistent_with_metrics_json():
    sweep = load_local(tiny_sweep_without_pool())
    assert len(sweep.runs) == 8 and len(sweep.problems) == 8 * 20
    assert sweep.knobs == ["strategy.temperature"]
    assert set(sweep.problems.variant) == {f"best_of_n (temperature={t})" for t in TEMPERATURES}
    assert set(sweep.problems.setting) == {"sim/sim/synthetic"}
    for row in sweep.runs.to_dict("records"):
        metrics = json.loads((Path(row["paths"]) / "metrics.json").read_text())
        for k in (1, 2, 4):
            for agg in ("naive", "weighted", "maj"):
                assert row[f"acc/{agg}@{k}"] == pytest.approx(metrics[f"acc/{agg}@{k}"])
            assert row[f"pass@{k}"] == pytest.approx(metrics[f"pass@{k}"])
        assert row["tokens/generated"] == metrics["tokens/generated"]
    n8 = sweep.problems[sweep.problems.n == 8]
    assert n8["weighted@8"].notna().all() and sweep.problems[sweep.problems.n == 4]["weighted@8"].isna().all()
    assert n8.mean_score.between(0, 1).all() and (n8.completions == 8).all()

    points = long_points(sweep.problems)
    # best-of-N is read at every K <= n, and K = 4 comes from the n = 4 run rather than a subset of n = 8
    assert sorted(points.budget.unique()) == [1, 2, 4, 8]
    assert set(points[points.budget == 4].n) == {4}
    acc = accuracy_table(points)
    assert (acc.seeds == 2).all() and (acc.acc_min <= acc.accuracy).all() and (acc.accuracy <= acc.acc_max).all()
    only_own = long_points(sweep.problems, subsample=False)
    assert sorted(only_own.budget.unique()) == [4, 8]


def test_loader_merges_shards_and_keeps_a_problem_recorded_twice_once(tmp_path):
    # the shards are written in the one-file format of older versions (results.jsonl), which the loader still reads
    source = find_run_dirs(tiny_sweep_without_pool())[0]
    lines = [json.dumps(r.to_json()) + "\n" for r in RunDirectory(source).records()]
    config = yaml.safe_load((source / "config.yaml").read_text())
    for name, start, end, part in [("shard0", 0, 10, lines[:10]), ("shard1", 10, 20, lines[10:]),
                                   ("merged", 0, None, lines)]:
        (tmp_path / name).mkdir()
        config["dataset"].update(start=start, end=end)
        (tmp_path / name / "config.yaml").write_text(yaml.safe_dump(config))
        (tmp_path / name / "results.jsonl").write_text("".join(part))
    sweep = load_local([tmp_path / "shard0", tmp_path / "shard1"])
    assert len(sweep.runs) == 1 and sweep.problems.unique_id.nunique() == 20 == len(sweep.problems)
    with_merged = load_local(tmp_path)
    assert len(with_merged.runs) == 1 and len(with_merged.problems) == 20
    assert with_merged.runs.paths[0].split(";")[0].endswith("merged")


def test_wandb_loader_downloads_artifacts_and_parses_them_like_local_runs(tmp_path):
    run_dirs = find_run_dirs(tiny_sweep())[:2]

    class Artifact:
        type = "results"

        def __init__(self, source, with_config):
            self.source, self.with_config = source, with_config

        def download(self, root):
            Path(root).mkdir(parents=True, exist_ok=True)
            names = [str(p.relative_to(self.source)) for p in RunDirectory(self.source).files()]
            names += ["config.yaml", "metrics.json"] if self.with_config else []
            for name in names:
                (Path(root) / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(self.source / name, Path(root) / name)
            return root

    class Run:
        def __init__(self, i, source):
            self.id, self.name, self.source = f"run{i}", f"run-{i}", source
            self.config = yaml.safe_load((source / "config.yaml").read_text())
            self.summary = json.loads((source / "metrics.json").read_text())

        def logged_artifacts(self):
            # an old-style artifact (results files only) for the second run: config comes from run.config
            return [Artifact(self.source, with_config=self.id == "run0")]

    class Api:
        def runs(self, path, filters=None):
            assert path == "team/tts" and filters == {"config.strategy.name": "best_of_n"}
            return [Run(i, d) for i, d in enumerate(run_dirs)]

    dirs = download_wandb_runs("team/tts", {"config.strategy.name": "best_of_n"}, tmp_path / "cache", api=Api())
    assert all((d / "config.yaml").exists() and (d / "metrics.json").exists() for d in dirs)
    remote = load_wandb("team/tts", {"config.strategy.name": "best_of_n"}, tmp_path / "cache2", api=Api())
    local = load_local(run_dirs)
    assert set(remote.runs.source) == {"wandb"}
    columns = [c for c in local.problems.columns if c != "variant"]
    pd.testing.assert_frame_equal(remote.problems[columns].reset_index(drop=True),
                                  local.problems[columns].reset_index(drop=True), check_like=True)


# -- the command ---------------------------------------------------------------------------------------------------


def test_cli_writes_every_figure_and_table(tmp_path, capsys):
    from analysis.__main__ import main

    refs = tmp_path / "refs.yaml"
    refs.write_text("references:\n  GPT-4o: 0.7\n")
    out = tmp_path / "figs"
    assert main([str(tiny_sweep()), "--out", str(out), "--reference", "Llama-3.1-8B=0.5", "--reference",
                 str(refs)]) == 0
    figures = {"accuracy_vs_n", "bins_oracle", "bins_model", "bins_absolute", "bins_level", "compute_optimal",
               "accuracy_vs_tokens"}
    for name in figures:
        assert (out / f"{name}.png").stat().st_size > 10_000, name
        assert (out / f"{name}.pdf").read_bytes().startswith(b"%PDF"), name  # vector copy beside the PNG
    for name in ("runs.csv", "problems.csv", "difficulty.csv", "accuracy_vs_n.csv", "compute_optimal.csv",
                 "compute_optimal_selection.csv", "accuracy_by_oracle_bin.csv", "accuracy_by_model_bin.csv",
                 "accuracy_by_absolute_bin.csv", "accuracy_by_level.csv"):
        assert (out / name).exists(), name
    runs = pd.read_csv(out / "runs.csv")
    assert runs.set_index("seed").role.groupby(level=0).unique().map(tuple).to_dict() == {
        0: ("candidate",), 1: ("candidate",), 100: ("reference",)}
    problems = pd.read_csv(out / "problems.csv")
    assert set(problems.seed) == {0, 1}  # the pool is never scored
    assert not problems.isna().all().any()  # no column for a budget no run reached
    curves = pd.read_csv(out / "compute_optimal.csv")
    for bins in ("oracle_bin", "model_bin", "absolute_bin", "level"):
        cv = curves[curves.method == method_name(bins, CV)].set_index("budget").accuracy
        insample = curves[curves.method == method_name(bins, IN_SAMPLE)].set_index("budget").accuracy
        assert list(cv.index) == [1, 2, 4, 8]
        assert (cv <= insample + 1e-12).all()  # selecting on the scored problems can only look better
    assert not any("((" in m or "))" in m for m in curves.method)  # plain labels
    difficulty = pd.read_csv(out / "difficulty.csv")
    assert difficulty.oracle_bin.value_counts().tolist() == [4] * 5  # 20 problems, equal quintiles
    assert set(difficulty.reference) == {"best_of_n (temperature=1.0) n=16 x1 seeds"}
    by_level = pd.read_csv(out / "accuracy_by_level.csv")
    assert by_level.groupby("level").problems.max().sum() == 20  # per-bin counts, as the bars show them
    absolute = difficulty.groupby("absolute_bin").pass1.agg(["min", "max"])
    assert absolute.loc[1, "min"] > 0.5 and absolute["max"].get(3, 0.0) < 0.1  # fixed thresholds, not quantiles
    assert (out / "verifier.csv").exists() and (out / "verifier_absolute.png").exists()  # analysis/verifier.py
    assert "wrote 11 figures" in capsys.readouterr().out  # 7 + a verifier figure per bin scheme
    assert main([str(tiny_sweep()), "--out", str(tmp_path / "bad"), "--absolute-thresholds", "0.1,0.5"]) == 2
    assert "--absolute-thresholds" in capsys.readouterr().err


def test_cli_without_a_pool_refuses_oracle_and_model_bins_in_one_line_and_draws_the_rest(tmp_path, capsys):
    from analysis.__main__ import main

    out = tmp_path / "figs"
    assert main([str(tiny_sweep_without_pool()), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    refusal = [line for line in captured.err.splitlines() if "no oracle/model difficulty bins" in line]
    assert len(refusal) == 1 and POOL_COMMAND in refusal[0]
    assert not (out / "bins_oracle.png").exists() and not (out / "difficulty.csv").exists()
    assert (out / "bins_level.png").exists() and (out / "compute_optimal.png").exists()
    curves = pd.read_csv(out / "compute_optimal.csv")
    assert set(curves.bins) == {"level", "all"}
    assert set(pd.read_csv(out / "verifier.csv").bins) == {"all", "level"}
    assert "wrote 5 figures" in captured.out  # 4 + the verifier's by level
    # a pool named explicitly is used, and its runs leave the candidates
    sweep = with_roles(load_local(tiny_sweep_without_pool()), parse_pool("best_of_n (temperature=1.0):8"))
    runs = sweep.runs
    assert set(runs[runs.role == "reference"].n) == {8} and set(runs[runs.role == "candidate"].n) == {4, 8}
    assert set(runs[runs.role == "reference"].variant) == {"best_of_n (temperature=1.0)"}
    assert analyse_setting(sweep)["difficulty"].reference.iloc[0] == "best_of_n (temperature=1.0) n=8 x2 seeds"
    assert main([str(tiny_sweep_without_pool()), "--out", str(tmp_path / "bad"), "--reference-pool", "beam"]) == 2
    assert "VARIANT:N" in capsys.readouterr().err


def test_references_parse_from_flags_and_yaml(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("Qwen: 0.61\n")
    assert parse_references(["Llama-3.1-8B=0.5", str(path)]) == {"Llama-3.1-8B": 0.5, "Qwen": 0.61}
    with pytest.raises(ValueError, match="NAME=ACCURACY"):
        parse_references(["Llama=high"])


def test_a_setting_named_by_many_knobs_gets_a_folder_the_file_system_accepts(tmp_path):
    """A served policy's setting (its URLs and model path in the name) beside a sim one: each gets its own folder,
    every path component within the file-name limit, two long names that differ only at the end kept apart."""
    from analysis.report import setting_dir

    served = "gsm8k/llama_none/" + ",".join(f"model.backend.base_url=http://node{i}.cluster.example:8000/v1"
                                            for i in range(8))
    settings = ["synthetic/sim_sim", served + ",a=1", served + ",a=2"]
    folders = [setting_dir(tmp_path, s, settings) for s in settings]
    assert len(set(folders)) == 3
    for folder in folders:
        folder.mkdir(parents=True)  # "File name too long" here before
        assert all(len(part.encode()) <= 255 for part in folder.relative_to(tmp_path).parts)


# -- figures a reader can trust -----------------------------------------------------------------------------------


def _figure_checks(monkeypatch) -> dict:
    """Wrap the figures' saver: for every figure written, its layout problems (analysis.plots.layout_problems) and
    any accuracy drawn outside [0, 1] (lines, bands, bars and their whiskers), read from the figure's artists."""
    import matplotlib.collections as mcollections

    from analysis import plots

    found: dict = {}
    original = plots.save_figure

    def checked(fig, path, **options):
        outside = []
        for ax in fig.axes:
            if "accuracy" not in ax.get_ylabel():
                continue
            values = [line.get_ydata() for line in ax.get_lines()]
            values += [c.get_paths()[0].vertices[:, 1] for c in ax.collections
                       if isinstance(c, mcollections.PolyCollection) and c.get_paths()]
            values += [np.concatenate([seg[:, 1] for seg in c.get_segments()]) for c in ax.collections
                       if isinstance(c, mcollections.LineCollection) and c.get_segments()]
            values += [np.array([p.get_height()]) for p in ax.patches]
            for v in values:
                v = np.asarray(v, dtype=float)
                v = v[np.isfinite(v)]
                if len(v) and (v.min() < -1e-9 or v.max() > 1 + 1e-9):
                    outside.append((ax.get_title(), float(v.min()), float(v.max())))
        found[path.name] = (plots.layout_problems(fig), outside, [t.get_text() for t in fig.texts])
        return original(fig, path, **options)

    monkeypatch.setattr(plots, "save_figure", checked)
    return found


def test_every_figure_keeps_legends_and_captions_inside_and_off_the_data(tmp_path, monkeypatch):
    from analysis.report import write_report
    from analysis.runs import load_local

    found = _figure_checks(monkeypatch)
    write_report(load_local(tiny_sweep()), tmp_path / "pool")  # its seed-100 runs are the default pool
    write_report(load_local(tiny_sweep_without_pool()), tmp_path / "nopool")
    assert {"accuracy_vs_n.png", "compute_optimal.png", "accuracy_vs_tokens.png"} <= set(found)
    for name, (problems, outside, _) in found.items():
        assert problems == [], name
        assert outside == [], name


def test_crowded_figures_keep_their_legends_readable(tmp_path, monkeypatch):
    """Twelve strategies, three aggregations, five budgets: where the legend beside the axes was cut off and covered
    the other legend."""
    from analysis import plots

    found = _figure_checks(monkeypatch)
    rows = []
    for v in range(12):
        for agg in ("naive", "weighted", "maj"):
            for b in (1, 4, 16, 64, 256):
                accuracy = min(1.0, 0.3 + 0.05 * np.log2(b) + 0.01 * v)
                rows.append(dict(setting="s", strategy=f"strategy{v}", variant=f"strategy{v} with a long name",
                                 aggregation=agg, budget=b, accuracy=accuracy, acc_min=accuracy, acc_max=accuracy,
                                 seeds=1, tokens_per_problem=100.0 * b, problems=20))
    acc = pd.DataFrame(rows)
    curves = pd.DataFrame([dict(method=m, budget=b, accuracy=0.5) for m in (
        "compute-optimal by oracle bins (cross-validated)", "compute-optimal by oracle bins (in-sample, optimistic)",
        "best single strategy (cross-validated)") for b in (1, 4, 16, 64, 256)])
    plots.accuracy_vs_tokens(acc, tmp_path / "tokens.png")
    plots.compute_optimal_curve(curves, acc, tmp_path / "co.png")
    assert found["tokens.png"][0] == [] and found["co.png"][0] == []


def test_the_compute_optimal_caption_says_what_was_computed(tmp_path, monkeypatch):
    """The caption names the reference pool only when one was used, and every aggregation the thin lines show;
    the thin lines show every aggregation, not only the weighted one (the gain over weighted alone overstated it)."""
    from analysis.report import write_report
    from analysis.runs import load_local

    found = _figure_checks(monkeypatch)
    write_report(load_local(tiny_sweep()), tmp_path / "pool")  # its seed-100 runs are the default pool
    pooled = " ".join(found["compute_optimal.png"][2])
    write_report(load_local(tiny_sweep_without_pool()), tmp_path / "nopool")
    unpooled = " ".join(found["compute_optimal.png"][2])
    assert "reference pool of runs that are never scored" in pooled.replace("\n", " ")
    assert "no reference pool was given" in unpooled.replace("\n", " ")
    assert "reference pool of runs" not in unpooled.replace("\n", " ")
    for caption in (pooled, unpooled):
        assert all(agg in caption.replace("\n", " ") for agg in ("naive", "weighted", "majority"))


def test_one_damaged_run_directory_is_named_and_skip_damaged_analyses_the_rest(tmp_path, capsys):
    """A run whose index scores were edited stops the analysis with one line naming the file; --skip-damaged
    analyses every other run and lists the one it left out."""
    from analysis.__main__ import main

    sweep = tmp_path / "sweep"
    shutil.copytree(tiny_sweep(), sweep)
    damaged = sweep / "synthetic/sim_sim/best_of_n/n8_seed1/t=0.6"
    index = damaged / "results" / "index.jsonl"
    entry = json.loads(index.read_text().splitlines()[0])
    entry["problems"][0]["scores"]["expected"]["weighted@8"] = 1.0 - entry["problems"][0]["scores"]["expected"][
        "weighted@8"]
    index.write_text(json.dumps(entry) + "\n" + "".join(line + "\n" for line in index.read_text().splitlines()[1:]))
    out = tmp_path / "figs"
    assert main([str(sweep), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{index} line 1 (batch-000000.jsonl.gz): the entry was edited" in err
    assert "--skip-damaged" in err and not out.exists()

    kept = load_local(sweep, skip_damaged=True)
    assert len(kept.runs) == len(find_run_dirs(tiny_sweep())) - 1
    assert [path for path, _ in kept.skipped] == [str(damaged)]
    assert not kept.runs.paths.str.contains("n8_seed1/t=0.6").any()
    assert main([str(sweep), "--out", str(out), "--skip-damaged"]) == 0
    printed = capsys.readouterr().out
    assert "skipped 1 damaged run directory:" in printed and str(index) in printed
    assert (out / "runs.csv").exists()
