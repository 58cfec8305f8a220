"""semisep: the entry points (CLI, nightly job, demo, experiment, sweep) on top of pipeline, training and evaluation."""
