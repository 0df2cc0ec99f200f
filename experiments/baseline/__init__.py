"""Baseline calibration: the device idles, sampled by the run's poller (samples in the trace)."""

from experiments.baseline.config import BaselineConfig
from experiments.baseline.runner import run

NAME = "baseline"
__all__ = ["NAME", "BaselineConfig", "run"]
