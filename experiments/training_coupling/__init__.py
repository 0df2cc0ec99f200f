"""Training coupling: a GPT-2 fine-tune logged per step on the poller's clock, to test whether
gradient-norm spikes couple with power, heating and RLE collapses (analysis in
experiments.analysis.coupling)."""

from experiments.training_coupling.config import TrainingCouplingConfig
from experiments.training_coupling.runner import run

NAME = "training_coupling"
__all__ = ["NAME", "TrainingCouplingConfig", "run"]
