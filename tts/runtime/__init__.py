"""Run-time pieces below the pipeline: the model cache shared by a sweep's jobs, preflight and resource limits, stop
signals, progress lines and Hydra's record of the job in the run directory."""
