"""The sweep progress line: jobs counted as Hydra's basic sweeper makes them, time left from the mean job."""

from __future__ import annotations

from tts.launch.sweep_progress import job_weights, progress_line


def test_sweep_progress_counts_jobs_and_estimates_the_time_left():
    weights = job_weights(["strategy=beam,dvts", "n=4,16,64,256", "seed=0,1,2,3,4", "dataset.num_problems=4"], 4)
    assert len(weights) == 40 and sum(weights) == 2 * 5 * (4 + 16 + 64 + 256)
    assert job_weights(["seed=0,1,2"], 16) == [16.0] * 3  # n from the config when the sweep does not set it
    assert progress_line(10, 40, 100.0) == "[10/40 jobs done] 100 s elapsed, about 5 min 00 s left"
    assert progress_line(40, 40, 7300.0) == "[40/40 jobs done] 2 h 01 min elapsed, done"


def test_the_time_left_weighs_jobs_by_their_n():
    """A sweep n=4,16,64,256 runs its cheap jobs first: after the five n=4 jobs of beam (20 s, 1 s per unit of n), the
    jobs left hold 3400 - 20 units of n, so about 3380 s are left, where the mean job's time would say 140 s."""
    weights = job_weights(["strategy=beam,dvts", "n=4,16,64,256", "seed=0,1,2,3,4"], 4)
    done = weights[:5]
    assert done == [4.0] * 5
    line = progress_line(5, 40, 20.0, sum(done), sum(weights))
    assert line == "[5/40 jobs done] 20 s elapsed, about 56 min 20 s left"
