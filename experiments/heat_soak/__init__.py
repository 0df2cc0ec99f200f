"""Heat soak: sustained load until thermal equilibrium, a thermal trip or the time cap."""

from experiments.heat_soak.config import HeatSoakConfig
from experiments.heat_soak.runner import run

NAME = "heat_soak"
__all__ = ["NAME", "HeatSoakConfig", "run"]
