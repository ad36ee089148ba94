"""The analysis in W&B: an analysis run (every figure as an image, every CSV as a table) and a W&B Report of the sweep.

    python -m analysis multirun --out figs --wandb        # after the figures: log the analysis run, build the report
    python -m analysis.wandb_report figs/wandb_report.json   # save a report written offline, once logged in

The analysis run has job_type `analysis` and the project, entity and group of the runs it read. The report (built with
wandb-workspaces) shows the sweep's accuracy vs N (from the runs' summaries), the difficulty-bin and compute-optimal
figures of the analysis run, and the runs table filtered to the sweep. Saving a report needs a W&B server and a login
(wandb-workspaces resolves the runsets through the API), so offline the report's definition is written next to the
figures as `wandb_report.json`, and the second command above saves it later (after `wandb sync` of the runs).
Everything W&B writes goes under `<out>/wandb/`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

SPEC = "wandb_report.json"
AGGREGATIONS = {"weighted": "weighted best-of-N", "maj": "majority vote", "naive": "naive best-of-N"}
BIN_FIGURES = ("bins_oracle", "bins_model", "bins_absolute", "bins_level")


# -- where the runs were logged -----------------------------------------------------------------------------------


def runs_logger(run_paths: list[str]) -> dict:
    """Project, entity, mode and group of the runs (from each run's config.yaml), as the analysis run must use them."""
    projects, entities, modes, groups = set(), set(), set(), set()
    for path in run_paths:
        config_file = Path(path) / "config.yaml"
        if not config_file.exists():
            continue
        config = yaml.safe_load(config_file.read_text()) or {}
        logger = config.get("logger") or {}
        projects.add(logger.get("project") or "tts")
        entities.add(logger.get("entity"))
        modes.add(logger.get("mode") or "offline")
        groups.add(
            logger.get("group") or "/".join(str(config.get(k, {}).get("name")) for k in ("model", "prm", "dataset"))
        )
    if len(projects) > 1:
        log.warning(
            "the runs were logged to several W&B projects (%s); the analysis run goes to %s",
            ", ".join(sorted(projects)),
            sorted(projects)[0],
        )
    return {
        "project": sorted(projects)[0] if projects else "tts",
        "entity": next(iter(entities)) if len(entities) == 1 else None,
        "mode": "online" if modes == {"online"} else "offline",
        "groups": sorted(groups),
    }


# -- the report ---------------------------------------------------------------------------------------------------


def report_spec(
    project: str,
    entity: str | None,
    groups: list[str],
    figure_keys: list[str],
    title: str = "Scaling test-time compute",
) -> dict:
    """The report's definition as plain JSON: what `build_report` turns into wandb-workspaces objects."""
    sweep_filter = _filter(groups, "search")
    bins = [k for k in figure_keys if k.rsplit("/", 1)[-1] in BIN_FIGURES]
    optimal = [k for k in figure_keys if k.rsplit("/", 1)[-1] == "compute_optimal"]
    verifier = [k for k in figure_keys if k.rsplit("/", 1)[-1].startswith("verifier_")]
    verifier_section = {
        "heading": "Verifier diagnostics",
        "runset": {"name": "analysis", "filters": _filter(groups, "analysis")},
        "panels": [
            {"kind": "media", "title": "PRM calibration, AUROC, F1 and search gain per bin", "media_keys": verifier}
        ],
    }
    return {
        "title": title,
        "project": project,
        "entity": entity,
        "groups": groups,
        "description": f"Sweep {', '.join(groups)}: accuracy vs N, difficulty bins, compute-optimal curve.",
        "sections": [
            {
                "heading": "Accuracy vs N",
                "runset": {"name": "sweep", "filters": sweep_filter, "groupby": ["strategy.name"]},
                "panels": [
                    {"kind": "scatter", "title": f"Accuracy at N, {label}", "x": "n", "y": f"acc_at_n/{agg}"}
                    for agg, label in AGGREGATIONS.items()
                ]
                + [{"kind": "scatter", "title": "pass@N", "x": "n", "y": "acc_at_n/pass"}],
            },
            {
                "heading": "Difficulty bins",
                "runset": {"name": "analysis", "filters": _filter(groups, "analysis")},
                "panels": [{"kind": "media", "title": "Accuracy per difficulty bin", "media_keys": bins}],
            },
            {
                "heading": "Compute-optimal curve",
                "runset": {"name": "analysis", "filters": _filter(groups, "analysis")},
                "panels": [{"kind": "media", "title": "Compute-optimal vs single strategies", "media_keys": optimal}],
            },
            *([verifier_section] if verifier else []),
            {
                "heading": "Runs",
                "runset": {"name": "sweep", "filters": sweep_filter},
                "panels": [{"kind": "runs_table", "title": "Runs of the sweep"}],
            },
        ],
    }


def _filter(groups: list[str], job_type: str) -> str:
    within = " or ".join(f"Metric('Group') == {json.dumps(g)}" for g in groups)
    return f"Metric('JobType') == '{job_type}'" + (
        f" and ({within})" if len(groups) > 1 else f" and {within}" if groups else ""
    )


def build_report(spec: dict):
    """wandb-workspaces objects for `spec` (no server needed until the report is saved)."""
    import wandb_workspaces.reports.v2 as wr

    blocks: list[Any] = [wr.P(spec["description"])]
    for section in spec["sections"]:
        runset = wr.Runset(
            entity=spec["entity"] or "",
            project=spec["project"],
            name=section["runset"]["name"],
            filters=section["runset"]["filters"],
            groupby=section["runset"].get("groupby", []),
        )
        panels: list[Any] = []
        for panel in section["panels"]:
            if panel["kind"] == "scatter":
                panels.append(
                    wr.ScatterPlot(title=panel["title"], x=wr.Config(panel["x"]), y=wr.SummaryMetric(panel["y"]))
                )
            elif panel["kind"] == "media":
                panels.append(wr.MediaBrowser(title=panel["title"], media_keys=panel["media_keys"]))
            elif panel["kind"] == "runs_table":
                panels.append(wr.RunComparer(diff_only="split"))
        blocks += [wr.H1(section["heading"]), wr.PanelGrid(runsets=[runset], panels=panels)]
    return wr.Report(
        project=spec["project"],
        entity=spec["entity"] or "",
        title=spec["title"],
        description=spec["description"],
        blocks=blocks,
    )


def save_report(spec: dict) -> str:
    """Save the report on the W&B server (needs a login); returns its URL."""
    report = build_report(spec)
    report.save()
    return report.url


# -- the analysis run ---------------------------------------------------------------------------------------------


def log_analysis(sweep, out_dir: Path, written: list[Path]) -> Path:
    """Log the analysis run and build the report; returns the report definition's path (written in any mode)."""
    import pandas as pd
    import wandb

    from tts.tracking.dirs import WandbDirs

    out_dir = Path(out_dir)
    paths = [part for joined in sweep.runs.get("paths", []) for part in str(joined).split(";")]  # shards: a;b
    where = runs_logger(paths)
    mode: Any = os.environ.get("WANDB_MODE") or where["mode"]  # online | offline | disabled, checked by wandb
    figures = {_key(p, out_dir): p for p in written if p.suffix == ".png"}
    tables = {_key(p, out_dir): p for p in written if p.suffix == ".csv"}
    spec = report_spec(where["project"], where["entity"], where["groups"], [f"figures/{k}" for k in figures])
    spec_path = out_dir / SPEC
    spec_path.write_text(json.dumps(spec, indent=2))

    os.environ.setdefault("WANDB_SILENT", "true")
    dirs = WandbDirs(out_dir / "wandb")
    dirs.enter()
    try:
        run = wandb.init(
            project=where["project"],
            entity=where["entity"],
            mode=mode,
            dir=str(out_dir),
            job_type="analysis",
            group=where["groups"][0] if len(where["groups"]) == 1 else None,
            name="analysis",
            config={"runs": len(sweep.runs), "settings": list(sweep.settings), "groups": where["groups"]},
        )
        sync_dir = getattr(run.settings, "sync_dir", None)
        if sync_dir:
            dirs.stage_in(Path(sync_dir) / "staging")
        run.log(
            {
                **{f"figures/{k}": wandb.Image(str(p)) for k, p in figures.items()},
                **{f"tables/{k}": wandb.Table(dataframe=pd.read_csv(p)) for k, p in tables.items()},
            }
        )
        offline = mode != "online"
        run.finish()
        if offline:
            print(
                f"W&B analysis run written offline to {sync_dir}; report definition in {spec_path}.\n"
                f"Upload the runs and this analysis with `wandb sync`, then save the report with:\n"
                f"  python -m analysis.wandb_report {spec_path}"
            )
        else:
            try:
                print(f"W&B report: {save_report(spec)}")
            except Exception as error:  # noqa: BLE001 - the analysis run is logged; the report can be saved later
                print(
                    f"W&B report not saved ({type(error).__name__}: {error}); save it later with:\n"
                    f"  python -m analysis.wandb_report {spec_path}",
                    file=sys.stderr,
                )
    finally:
        wandb.teardown()
        dirs.exit()
    return spec_path


def _key(path: Path, out_dir: Path) -> str:
    return str(path.relative_to(out_dir).with_suffix(""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.wandb_report",
        description="Save a W&B Report written offline by `python -m analysis --wandb`.",
    )
    parser.add_argument("spec", help=f"the report definition ({SPEC} in the analysis output folder)")
    args = parser.parse_args(argv)
    try:
        print(save_report(json.loads(Path(args.spec).read_text())))
    except Exception as error:  # noqa: BLE001 - no login, no server: one line
        raise SystemExit(f"python -m analysis.wandb_report: {type(error).__name__}: {error}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
