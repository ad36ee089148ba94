"""The sweep progress line: jobs counted as Hydra's basic sweeper makes them, time left from the mean job."""

from __future__ import annotations

from tts.launch.sweep_progress import count_jobs, progress_line


def test_sweep_progress_counts_jobs_and_estimates_the_time_left():
    assert count_jobs(["strategy=beam,dvts", "n=4,16,64,256", "seed=0,1,2,3,4", "dataset.num_problems=4"]) == 40
    assert progress_line(10, 40, 100.0) == "[10/40 jobs done] 100 s elapsed, about 5 min 00 s left"
    assert progress_line(40, 40, 7300.0) == "[40/40 jobs done] 2 h 01 min elapsed, done"
