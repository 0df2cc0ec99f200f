"""Training-coupling settings: model shape, batch, steps, the learning-rate spike schedule
and the simulated-device knobs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from experiments.presets import pick


class CouplingAnalysisSettings(BaseModel):
    """The coupling analysis' settings (experiments.analysis.coupling.analyze_training_coupling);
    the report records the ones it used, and its tables are computed with them."""

    model_config = ConfigDict(extra="forbid")

    max_lag: int = Field(5, ge=1, description="lags -max_lag..+max_lag steps are tested")
    n_boot: int = Field(999, ge=1, description="block-bootstrap draws (p cannot fall below 1 / (n_boot + 1))")
    alpha: float = Field(0.01, gt=0, lt=1, description="p at or below this is 'coupled'")
    spike_k: float = Field(6.0, gt=0, description="a spike: grad_norm above its rolling median by k MADs")
    detrend_window_steps: int = Field(21, ge=0, description="rolling-median detrend window (< 2: none)")
    min_steps: int = Field(40, ge=1, description="fewer aligned steps give 'insufficient data'")
    require_collapses: bool = Field(False, description="'insufficient data' without an RLE collapse")
    power_field: Literal["auto", "power_w", "power_instant_w"] = Field(
        "auto", description="per-step power from this field (auto: power_instant_w when the trace has it)")
    temp_slope_window_s: float = Field(5.0, gt=0, description="least-squares window of the temperature slope")
    clock_offset_ns: int = Field(0, description="added to step times to put them on the trace's clock")
    seed: int = Field(0, description="seed of the bootstrap")


class TrainingCouplingConfig(BaseModel):
    """What to train and how; the ``sim_*`` fields only act on a simulated device."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("tiny", description="a shape of experiments.workload.SHAPES or a local model directory")
    n_positions: int | None = Field(None, ge=1, description="override the model's position limit")
    batch_size: int = Field(8, ge=1)
    seq_len: int = Field(128, ge=2)
    steps: int = Field(400, ge=1)
    lr: float = Field(3e-4, gt=0, description="base learning rate (AdamW)")
    warmup_steps: int = Field(10, ge=0, description="linear learning-rate warm-up")
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float | None = Field(1.0, gt=0, description="clip threshold; grad_norm is logged before clipping")
    lr_spike_steps: list[int] = Field(default_factory=list, description="steps where a learning-rate spike starts")
    lr_spike_factor: float = Field(30.0, gt=0, description="the learning rate is multiplied by this during a spike")
    lr_spike_length: int = Field(1, ge=1, description="steps each spike lasts")
    data_pool_batches: int = Field(8, ge=1, description="synthetic batches cycled over (so the loss can fall)")
    autocast_dtype: Literal["bfloat16"] | None = Field(None, description="autocast on CUDA only")
    seed: int = 0
    cpu_threads: int | None = Field(
        1, ge=1,
        description="torch intra-op threads while training on the CPU (restored afterwards; None leaves torch's "
                    "setting): one thread leaves the other cores to the poller, and a contended multi-threaded "
                    "step spins for ten times longer")
    sim_level: float = Field(0.8, gt=0, le=1.0, description="declared load level of a training step (simulated)")
    sim_min_step_s: float = Field(
        0.0, ge=0,
        description="simulated device only: hold each step at least this long, so that a step outlasts the "
                    "simulated sensor's update period (the CPU's step time says nothing about the simulated board)")
    sim_power_follows_grad_norm: float = Field(
        0.0, ge=0,
        description="TEST KNOB, simulated device only: when > 0 the declared level of step i is raised by this "
                    "times (grad_norm[i-1] / median of the earlier grad norms - 1), a known coupling that gives "
                    "the analysis a positive control. 0 (default) keeps the level constant: no physical claim.")
    analysis: CouplingAnalysisSettings = Field(default_factory=CouplingAnalysisSettings,
                                               description="settings of the coupling analysis of the run")

    @model_validator(mode="after")
    def _check(self) -> "TrainingCouplingConfig":
        if any(s < 0 for s in self.lr_spike_steps):
            raise ValueError("lr_spike_steps must be >= 0")
        return self

    def lr_at(self, step: int) -> float:
        """Learning rate of a step: linear warm-up, then constant, times the spike factor in a spike."""
        lr = self.lr * (min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0)
        if self.in_spike(step):
            lr *= self.lr_spike_factor
        return lr

    def in_spike(self, step: int) -> bool:
        """True when ``step`` lies in a learning-rate spike."""
        return any(s <= step < s + self.lr_spike_length for s in self.lr_spike_steps)

    @classmethod
    def for_profile(cls, profile: str) -> "TrainingCouplingConfig":
        """Preset for a run profile: smoke (~15 s on a CPU, tiny model), quick, full."""
        return cls(
            model=pick(profile, "tiny", "tiny", "124m"),
            batch_size=pick(profile, 2, 8, 8),
            seq_len=pick(profile, 32, 128, 512),
            # smoke: 100 steps of >= 80 ms, about 8 s of training after ~6 s of imports on a CPU.
            steps=pick(profile, 100, 600, 3000),
            warmup_steps=pick(profile, 5, 20, 100),
            lr=pick(profile, 1e-3, 5e-4, 3e-4),
            lr_spike_steps=pick(profile, [30, 70], [150, 300, 450], [500, 1000, 1500, 2000, 2500]),
            sim_min_step_s=pick(profile, 0.08, 0.1, 0.2),
        )
