"""The sweep progress line: jobs counted as Hydra's basic sweeper makes them, time left from the mean job."""

from __future__ import annotations

import pytest
from tqdm import tqdm

from tts.cli.sweep_progress import job_weights, progress_line, time_left


def test_sweep_progress_counts_jobs_and_estimates_the_time_left():
    weights = job_weights(["strategy=beam,dvts", "n=4,16,64,256", "seed=0,1,2,3,4", "dataset.num_problems=4"], 4)
    assert len(weights) == 40 and sum(weights) == 2 * 5 * (4 + 16 + 64 + 256)
    assert job_weights(["seed=0,1,2"], 16) == [16.0] * 3  # n from the config when the sweep does not set it
    assert progress_line(10, 40, 100.0) == "[10/40 jobs done] 01:40 elapsed, about 05:00 left"
    assert progress_line(40, 40, 7300.0) == "[40/40 jobs done] 2:01:40 elapsed, done"


def test_the_time_left_fits_start_up_and_per_n_time_to_the_jobs_finished():
    """A sweep n=4,16,64,256 runs its cheap jobs first. Jobs that take 10 s + 0.5 s per unit of n: after the five n=4
    jobs the two parts cannot be told apart (a range: all start-up, or all proportional to n); once an n=16 job is in,
    the fit gives the time left exactly."""
    weights = job_weights(["strategy=beam,dvts", "n=4,16,64,256", "seed=0,1,2,3,4"], 4)
    took = [(w, 10 + 0.5 * w) for w in weights]
    low, high = time_left(took[:5], weights[5:])
    assert low == 12 * 35 and high == 12 / 4 * (sum(weights) - 20)  # 35 jobs of 12 s; 3 s per unit of n
    assert "between 07:00 and 2:49:00 left" in progress_line(5, 40, 60.0, (low, high))
    exact = 10 * 34 + 0.5 * (sum(weights) - 20 - 16)
    assert time_left(took[:6], weights[6:]) == pytest.approx((exact, exact))
    assert progress_line(6, 40, 80.0, (exact, exact)) == f"[6/40 jobs done] 01:20 elapsed, about {tqdm.format_interval(exact)} left"
