"""Training-coupling runner: a plain torch fine-tune of a GPT-2 family model on synthetic
tokens, logged per step on the poller's clock.

Per step it records step, loss, grad_norm (before clipping), learning rate, the step's start
and end on the host monotonic clock (``time.monotonic_ns``, the poller's clock, taken from
the step's ``event_start`` / ``event_end`` markers) and the step's energy from the device
counter read at both boundaries (None when the device has no counter or its reads failed
three times in a row).

Each step runs inside the accelerator's ``step``: on a GPU the model trains there and the
board draws what it draws; on a simulated board the model trains on the host CPU (a small
model) while the board is busy for the compute model's step time (at least
``sim_min_step_s``) at the level :func:`sim_level_for` gives: a constant ``sim_level``,
unless the test knob ``sim_power_follows_grad_norm`` couples it to the previous step's
grad norm. The runner makes the same calls on both.
"""

from __future__ import annotations

import math
import time

import numpy as np

from experiments.context import EVENT_END, EVENT_START, RunContext
from experiments.training_coupling.config import TrainingCouplingConfig

NAME = "training_coupling"
SCHEMA_VERSION = 1
STEP_PHASE = "train_step"


def _finite_or_none(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(float(v)) else None


def read_counter_j(ctx: RunContext, tries: int = 3) -> float | None:
    """The device's energy counter (J), retried after 1 ms when a read fails; None without one."""
    for attempt in range(tries):
        value = ctx.energy_counter_j()
        if value is not None or not ctx.device.capabilities.energy_j:
            return value
        if attempt + 1 < tries:
            time.sleep(0.001)
    return None


def sim_level_for(config: TrainingCouplingConfig, previous_grad_norms: list[float]) -> float:
    """Declared load level of the next step on a simulated device.

    ``sim_level``, raised by ``sim_power_follows_grad_norm * (g_prev / median(g_earlier) - 1)``
    when the knob is on, clipped to [0.05, 1].
    """
    level = config.sim_level
    k = config.sim_power_follows_grad_norm
    finite = [g for g in previous_grad_norms if g is not None and math.isfinite(g)]
    if k > 0 and finite and previous_grad_norms[-1] is not None:
        med = float(np.median(finite))
        if med > 0:
            level += k * (previous_grad_norms[-1] / med - 1.0)
    return float(min(1.0, max(0.05, level)))


def run(ctx: RunContext, config: TrainingCouplingConfig) -> dict:
    """Train for ``config.steps`` steps; returns the window and one dict per step.

    Returns ``{"experiment", "schema_version", "t_start_ns", "t_end_ns", "steps": [{"step",
    "loss", "grad_norm", "lr", "lr_spike", "t_start_ns", "t_end_ns", "energy_j",
    "counter_start_j", "counter_end_j", "load_level"}], "end_reason", "model", "n_params",
    "torch_device", "simulated", "thermal_trips" (the context's guard pauses, between steps),
    "config"}``.
    """
    import torch

    device = ctx.accelerator.torch_device
    on_cpu = torch.device(device).type == "cpu"
    threads_before = torch.get_num_threads()
    if on_cpu and config.cpu_threads is not None:
        torch.set_num_threads(config.cpu_threads)
    try:
        return _train(ctx, config, torch, device)
    finally:
        if torch.get_num_threads() != threads_before:
            torch.set_num_threads(threads_before)


def _train(ctx: RunContext, config: TrainingCouplingConfig, torch, device: str) -> dict:
    from experiments import workload

    torch.manual_seed(config.seed)
    model = workload.build_model(config.model, n_positions=config.n_positions, device=device)
    dims = workload.model_dims(model)
    if config.seq_len > dims["n_positions"]:
        raise ValueError(f"seq_len {config.seq_len} exceeds the model's n_positions {dims['n_positions']}; "
                         "lower seq_len or set n_positions")
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr_at(0), weight_decay=config.weight_decay)
    pool = [workload.synthetic_batch(config.batch_size, config.seq_len, dims["vocab_size"],
                                     seed=config.seed * 100_003 + b, device=device)
            for b in range(config.data_pool_batches)]
    use_autocast = config.autocast_dtype is not None and torch.device(device).type == "cuda"
    max_norm = config.grad_clip if config.grad_clip is not None else float("inf")
    input_tokens = config.batch_size * config.seq_len

    steps: list[dict] = []
    grad_norms: list[float | None] = []
    end_reason = "completed"
    acc = ctx.accelerator
    trips_before = len(ctx.thermal_trips)
    step_flops = 6.0 * sum(p.numel() for p in params) * input_tokens  # forward + backward
    with ctx.phase(NAME):
        t_start = time.monotonic_ns()
        for i in range(config.steps):
            # between steps nothing is in progress: a thermal trip pauses here until the board cools
            if ctx.should_stop() or not ctx.thermal_checkpoint(f"step-{i}"):
                end_reason = "interrupted"
                break
            lr = config.lr_at(i)
            for group in opt.param_groups:
                group["lr"] = lr
            level = sim_level_for(config, grad_norms)
            event_id = f"step-{i}"
            e0 = read_counter_j(ctx)
            t0 = ctx.mark(EVENT_START, event_id=event_id, phase=STEP_PHASE, batch_size=config.batch_size,
                          input_tokens=input_tokens, output_tokens=0, energy_counter_j=e0, step=i, lr=lr)
            ids = pool[i % len(pool)]
            with acc.step(step_flops, dims["n_layer"], intensity=level, min_s=config.sim_min_step_s):
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_autocast):
                    loss = model(input_ids=ids, labels=ids).loss
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm=max_norm, error_if_nonfinite=False)
                opt.step()
                loss_v = _finite_or_none(loss.detach().float().item())  # .item() synchronises the device
                grad_v = _finite_or_none(grad_norm.detach().float().item())
            e1 = read_counter_j(ctx)
            t1 = ctx.mark(EVENT_END, event_id=event_id, phase=STEP_PHASE, energy_counter_j=e1, loss=loss_v,
                          grad_norm=grad_v)
            grad_norms.append(grad_v)
            steps.append({
                "step": i, "loss": loss_v, "grad_norm": grad_v, "lr": lr, "lr_spike": config.in_spike(i),
                "t_start_ns": int(t0), "t_end_ns": int(t1),
                "energy_j": (e1 - e0) if (e0 is not None and e1 is not None) else None,
                "counter_start_j": e0, "counter_end_j": e1,
                "load_level": level if ctx.simulated else None,  # the simulated board's level; a GPU's is measured
            })
            ctx.progress(NAME, (i + 1) / config.steps)
            if loss_v is None:
                end_reason = "diverged"
                break
        acc.idle()
        t_end = time.monotonic_ns()
    return {
        "experiment": NAME,
        "schema_version": SCHEMA_VERSION,
        "t_start_ns": int(t_start),
        "t_end_ns": int(t_end),
        "steps": steps,
        "end_reason": end_reason,
        "model": dims,
        "n_params": int(sum(p.numel() for p in params)),
        "torch_device": str(device),
        "simulated": bool(ctx.simulated),
        "thermal_trips": ctx.thermal_trips[trips_before:],
        "config": config.model_dump(),
    }
