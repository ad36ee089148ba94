"""Running figures of a run in progress, for W&B's live charts: one history row per finished batch.

Each row is plotted against `progress/problems_done`, so a resumed run (same W&B id) continues the same curves: its
first row counts the problems already on disk. At the last batch the running accuracies equal metrics.json's
`acc/<aggregation>@n` and `pass@n` (the same per-problem expectations, averaged over the same problems).
`progress/tokens_per_s` counts this session's generated tokens over the time since tracking started (model loading
included, so the first rows of a real-model run read low).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Union

from tts.data.records import ProblemRecord, ProblemSummary
from tts.scoring import reported_aggregations


class RunningFigures:
    def __init__(self, n: int, total_problems: int) -> None:
        self.n = n
        self.total = total_problems
        self.done = 0
        self.sums: dict[str, float] = {}  # per aggregation the problems report (no naive/weighted with prm=none)
        self.passed = 0.0
        self.tokens = 0.0
        self.session_tokens = 0.0
        self.started = time.perf_counter()

    def add(self, records: Iterable[Union[ProblemRecord, ProblemSummary]], this_session: bool = True) -> None:
        """Count finished problems: this session's records, or (`this_session=False`) the summaries of problems a
        resumed run found on disk."""
        for record in records:
            scores = record.scores
            k = self.n if f"pass@{self.n}" in scores.pass_at else max(int(key.split("@")[1]) for key in scores.pass_at)
            for agg in reported_aggregations(scores.expected):
                if f"{agg}@{k}" in scores.expected:
                    self.sums[agg] = self.sums.get(agg, 0.0) + scores.expected[f"{agg}@{k}"]
            self.passed += scores.pass_at[f"pass@{k}"]
            tokens = record.compute.get("generated_tokens", 0)
            self.tokens += tokens
            if this_session:
                self.session_tokens += tokens
            self.done += 1

    def row(self) -> dict:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        row = {
            "progress/problems_done": self.done,
            "progress/problems_total": self.total,
            "progress/tokens_generated": self.tokens,
            "progress/tokens_per_s": self.session_tokens / elapsed,
            "progress/elapsed_s": elapsed,
        }
        if self.done:
            for agg, total in self.sums.items():
                row[f"progress/acc_{agg}@{self.n}"] = total / self.done
            row[f"progress/pass@{self.n}"] = self.passed / self.done
        return row
