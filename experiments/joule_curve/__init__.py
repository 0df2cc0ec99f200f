"""Joule curve: prefill and decode events across batch sizes, warmup really run, energy counter read at each boundary."""

from experiments.joule_curve.config import JouleCurveConfig
from experiments.joule_curve.runner import run

NAME = "joule_curve"
__all__ = ["NAME", "JouleCurveConfig", "run"]
