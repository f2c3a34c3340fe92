"""Experiment readout: sample size, SRM gate, fixed-horizon and sequential tests, report (docs/EXPERIMENTS.md)."""
