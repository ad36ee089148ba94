"""Entry glue above the pipeline: the command line checked before Hydra composes, the sweep guard and Hydra callbacks
(conf/config.yaml), SLURM status and sweep progress. Nothing below the pipeline imports it."""
