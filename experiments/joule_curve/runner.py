"""Joule curve runner: measured prefill and decode events across batch sizes.

For each batch size (in increasing order) the warmup is really run first (TR122
configured a warmup and never ran it), then ``repetitions`` x (one prefill event, one
decode event from that prefill's KV cache). Every event is bracketed by ``event_start``
and ``event_end`` markers carrying the device's energy counter at that boundary; the
energy analysis (experiments/analysis/energy.py) works from those and the power trace.

Token counts of an event are the tokens it processed, summed over the batch and over its
passes: a prefill event has ``input_tokens = passes * batch * prompt`` and
``output_tokens = 0``; a decode event ``input_tokens = 0`` and ``output_tokens = passes *
batch * steps`` (its prompt length is ``context_tokens``). ``tokens_per_second`` divides
those by the event's duration (the energy window).

Events last at least the configured minimum: on a real GPU by repeating the pass (a
decode pass replays from the same cache, rewound), never by idling, which would bill idle
energy to tokens. On a simulated device a pass runs no model (its tokens are counted from
the shapes): the declared load level (see :meth:`JouleCurveConfig.load_level`) is the
workload, as in every other experiment, and holds the simulated GPU busy until the minimum
duration; the load markers cover each event exactly, and the VRAM they declare is the
model's (``config.model`` in ``config.dtype``: weights plus the memory model's peak of
prefill and decode). ``cpu_stand_in`` also runs the tiny model of the same family on the
CPU in each pass to exercise the workload code; that costs a torch +
transformers import (about 6 CPU-seconds per host, which a fleet of simulated hosts on one
machine pays many times) and changes nothing the simulated sensors see.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Callable

from agents.errors import ExperimentError, OutOfDeviceMemory
from experiments import model_shapes
from experiments.context import EVENT_END, EVENT_START, RunContext
from experiments.joule_curve.config import JouleCurveConfig
from experiments.memory import ActivationModel, MiB, translate_cuda_oom

NAME = "joule_curve"
SCHEMA_VERSION = 1


def run(ctx: RunContext, config: JouleCurveConfig) -> dict:
    """Run the warmups and the measured events on ``ctx``'s device; returns the report dict."""
    if not ctx.simulated or not config.cpu_stand_in:
        return _run(ctx, config)
    import torch

    # The tiny CPU stand-in gains nothing from intra-op threads, and they would compete
    # with the poller process for the host's cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(ctx, config)
    finally:
        torch.set_num_threads(threads)


def _run(ctx: RunContext, config: JouleCurveConfig) -> dict:
    simulated = ctx.simulated
    shape, act, model, workload, ran = _model(ctx, config)
    min_event_s = effective_min_event_s(ctx, config)
    runner = _EventRunner(ctx, config, model, workload, simulated, min_event_s)
    events: list[dict] = []
    warmup_passes = 0
    stopped, oom_batch = False, None
    with ctx.phase(NAME):
        ctx.progress(NAME, 0.0)
        for i, batch in enumerate(config.batch_sizes):
            if ctx.should_stop():
                stopped = True
                break
            ids = None if model is None else workload.synthetic_batch(
                batch, config.input_tokens, int(model.config.vocab_size), config.seed + batch)
            vram_mb = predicted_vram_mb(act, config, batch)
            runner.vram_mb = vram_mb if simulated else None
            try:
                warmup_passes += runner.warmup(batch, ids)
                for rep in range(config.repetitions):
                    if ctx.should_stop():
                        stopped = True
                        break
                    pre_ev, pre = runner.prefill_event(f"prefill-b{batch}-r{rep}", batch, ids)
                    events.append(pre_ev)
                    _gap(ctx, config.gap_s)
                    events.append(runner.decode_event(f"decode-b{batch}-r{rep}", batch, pre))
                    del pre
                    _gap(ctx, config.gap_s)
            except OutOfDeviceMemory as exc:
                # A batch size that does not fit ends the curve; the smaller ones stand.
                oom_batch = {"batch_size": batch, "error": str(exc)}
                break
            ctx.progress(NAME, (i + 1) / len(config.batch_sizes))
            if stopped:
                break
    runner.model = model = None  # free the weights before the report is built
    return _report(ctx, config, events, runner, warmup_passes, stopped, oom_batch, min_event_s, shape, ran, act)


# -- the model (where its shape and dtype enter) -----------------------------------------------


def _model(ctx: RunContext, config: JouleCurveConfig):
    """(shape, memory model, built model or None, workload module or None, what ran) for ``config.model``.

    On a real GPU the model itself runs in ``config.dtype``. On a simulated board it runs
    nowhere (its memory model sizes the declared VRAM), unless ``cpu_stand_in`` asks for the
    tiny model of the same family on the CPU (float32). The model is built before the
    measurement window opens.
    """
    shape = model_shapes.resolve(config.model)
    act = ActivationModel.from_shape(shape, config.dtype, attn_implementation=config.attn_implementation)
    if config.input_tokens + config.output_tokens > shape.n_positions:
        raise ExperimentError(
            f"{NAME}: input_tokens + output_tokens = {config.input_tokens + config.output_tokens} exceeds the "
            f"position limit {shape.n_positions} of {config.model}; lower them in the joule_curve config")
    if ctx.simulated and not config.cpu_stand_in:
        return shape, act, None, None, "none (declared load)"
    from experiments import workload  # torch and transformers

    if ctx.simulated:
        spec, dtype, device, ran = shape.tiny(), "float32", "cpu", f"{shape.tiny().name} on the CPU (stand-in)"
    else:
        spec, dtype, device, ran = config.model, config.dtype, ctx.torch_device, "on the device"
    try:
        with translate_cuda_oom():
            model = workload.build_model(spec, device=device, dtype=dtype, attn_implementation=config.attn_implementation)
    except OutOfDeviceMemory as exc:
        raise ExperimentError(f"{NAME}: the model {config.model!r} ({dtype}) does not fit on {device}: {exc}") from None
    return shape, act, model, workload, ran


def predicted_vram_mb(act: ActivationModel, config: JouleCurveConfig, batch: int) -> float:
    """Weights plus the larger of the prefill's and the last decode step's peak, MiB."""
    return (act.weight_bytes() + act.serve_peak_bytes(batch, config.input_tokens, config.output_tokens)) / MiB


def effective_min_event_s(ctx: RunContext, config: JouleCurveConfig) -> float:
    """``min_event_s``, raised on a simulated device to ``min_sensor_periods`` sensor (and counter) periods."""
    profile = getattr(ctx.device, "profile", None)
    if not ctx.simulated or profile is None:
        return float(config.min_event_s)
    period_s = max(profile.sensor_update_period_ms, profile.energy_counter_update_ms) / 1000.0
    return max(float(config.min_event_s), config.min_sensor_periods * period_s)


def _gap(ctx: RunContext, seconds: float) -> None:
    if seconds > 0:
        ctx.sleep(seconds)


class _EventRunner:
    """Runs warmups and marked events; counts passes.

    With no model (a simulated device without the CPU stand-in) a pass runs nothing: its
    tokens are counted from the shapes and the declared load is the work.
    """

    def __init__(self, ctx: RunContext, config: JouleCurveConfig, model, workload, simulated: bool,
                 min_event_s: float):
        self.ctx, self.config, self.model, self.workload = ctx, config, model, workload
        # No model, no torch: the CUDA error translation (which imports torch) has nothing to catch.
        self.guard = translate_cuda_oom if model is not None else contextlib.nullcontext
        self.simulated, self.min_event_s = simulated, min_event_s
        self.vram_mb: float | None = None
        self.warmup_prefills = 0
        self.warmup_decodes = 0

    def warmup(self, batch: int, ids) -> int:
        """The unmeasured prefill+decode passes for this batch size; returns how many ran."""
        ctx, cfg = self.ctx, self.config
        done = 0
        with ctx.phase(f"{NAME}.warmup", batch_size=batch):
            try:
                for _ in range(cfg.warmup_repetitions):
                    ctx.set_load(cfg.load_level("prefill", batch), vram_mb=self.vram_mb)
                    with self.guard():
                        pre = None if self.model is None else self.workload.prefill(self.model, ids)
                        self.warmup_prefills += 1
                        ctx.set_load(cfg.load_level("decode", batch), vram_mb=self.vram_mb)
                        if self.model is not None:
                            self.workload.decode(self.model, pre, cfg.output_tokens)
                        self.warmup_decodes += 1
                    pre = None
                    done += 1
            finally:
                ctx.set_load(0.0)
        return done

    def prefill_event(self, event_id: str, batch: int, ids) -> tuple[dict, object]:
        """One measured prefill event; returns its record and the last pass's result (None without a model)."""
        per_pass = batch * self.config.input_tokens
        last: list = [None]

        def one_pass() -> tuple[int, int]:
            if self.model is None:
                return per_pass, 0
            last[:] = [self.workload.prefill(self.model, ids)]
            return last[0].input_tokens, 0

        ev = self._event(event_id, "prefill", batch, one_pass, per_pass, 0)
        return ev, last[0]

    def decode_event(self, event_id: str, batch: int, pre) -> dict:
        """One measured decode event from ``pre``'s KV cache (rewound between passes)."""
        n = self.config.output_tokens
        state = {"decoded": 0}
        workload = self.workload

        def one_pass() -> tuple[int, int]:
            if self.model is None:
                return 0, batch * n
            if state["decoded"]:
                workload.rewind(pre.past, state["decoded"])
            d = workload.decode(self.model, pre.past, n, pre.next_ids)
            state["decoded"] = n
            return 0, d.output_tokens

        return self._event(event_id, "decode", batch, one_pass, 0, batch * n)

    def _event(self, event_id: str, phase: str, batch: int, one_pass: Callable[[], tuple[int, int]],
               in_per_pass: int, out_per_pass: int) -> dict:
        ctx, cfg = self.ctx, self.config
        level = cfg.load_level(phase, batch)
        attrs = {"event_id": event_id, "phase": phase, "batch_size": batch, "context_tokens": cfg.input_tokens}
        ctx.set_load(level, vram_mb=self.vram_mb)
        e0 = ctx.energy_counter_j()
        t0 = ctx.mark(EVENT_START, **attrs, input_tokens=in_per_pass, output_tokens=out_per_pass, energy_counter_j=e0)
        tokens_in = tokens_out = passes = 0
        compute_ns = 0
        aborted = None
        try:
            with self.guard():
                while passes == 0 or (not self.simulated and time.monotonic_ns() - t0 < self.min_event_s * 1e9):
                    c0 = time.monotonic_ns()
                    n_in, n_out = one_pass()
                    compute_ns += time.monotonic_ns() - c0
                    tokens_in, tokens_out, passes = tokens_in + n_in, tokens_out + n_out, passes + 1
            if self.simulated:
                # The declared level keeps the simulated GPU busy for the rest of the event.
                left_s = self.min_event_s - (time.monotonic_ns() - t0) / 1e9
                if left_s > 0:
                    time.sleep(left_s)
        except BaseException as exc:
            aborted = type(exc).__name__
            raise
        finally:
            e1 = ctx.energy_counter_j()
            end_attrs = {"input_tokens": tokens_in, "output_tokens": tokens_out, "passes": passes,
                         "energy_counter_j": e1}
            if aborted:
                end_attrs["aborted"] = aborted
            t1 = ctx.mark(EVENT_END, **attrs, **end_attrs)
            ctx.set_load(0.0)
        duration_s = (t1 - t0) / 1e9
        tokens = tokens_in if phase == "prefill" else tokens_out
        return {
            "event_id": event_id,
            "phase": phase,
            "batch_size": int(batch),
            "input_tokens": int(tokens_in),
            "output_tokens": int(tokens_out),
            "context_tokens": int(cfg.input_tokens),
            "passes": int(passes),
            "t_start_ns": int(t0),
            "t_end_ns": int(t1),
            "duration_s": duration_s,
            "compute_s": compute_ns / 1e9,
            "energy_counter_start_j": e0,
            "energy_counter_end_j": e1,
            "tokens_per_second": tokens / duration_s if duration_s > 0 else None,
            "compute_tokens_per_second": tokens / (compute_ns / 1e9) if compute_ns > 0 else None,
            "load_level": level if self.simulated else None,
        }


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _report(ctx, config, events, runner, warmup_passes, stopped, oom_batch, min_event_s, shape, ran, act) -> dict:
    simulated = ctx.simulated
    throughput = []
    for phase in ("prefill", "decode"):
        for batch in config.batch_sizes:
            rows = [e for e in events if e["phase"] == phase and e["batch_size"] == batch]
            if not rows:
                continue
            throughput.append({
                "phase": phase,
                "batch_size": batch,
                "events": len(rows),
                "tokens_per_second_median": _median(e["tokens_per_second"] for e in rows),
                "compute_tokens_per_second_median": _median(e["compute_tokens_per_second"] for e in rows),
                "duration_s_median": _median(e["duration_s"] for e in rows),
                "load_level": rows[0]["load_level"],
            })
    batches_done = sorted({e["batch_size"] for e in events})
    expected_warmups = config.warmup_repetitions * len(batches_done)
    order = [e["batch_size"] for e in events]
    has_counter = bool(ctx.device.capabilities.energy_j)
    missing = sum(1 for e in events for k in ("energy_counter_start_j", "energy_counter_end_j") if e[k] is None)
    short = [e["event_id"] for e in events if e["duration_s"] < min_event_s * 0.999]
    return {
        "experiment": NAME,
        "schema_version": SCHEMA_VERSION,
        "figures": {
            "throughput": throughput,
            "min_event_s": min_event_s,
            "model": {
                "name": shape.name, "builtin": shape.builtin,
                "shape": shape.name if shape.builtin else None,  # the older key
                "model_path_given": not shape.builtin,
                "ran": ran,
                **act.figures(),
                "dtype": config.dtype,
                "attn_implementation": config.attn_implementation,
                "input_tokens": config.input_tokens,
                "output_tokens": config.output_tokens,
                "predicted_vram_mb": [{"batch_size": b, "vram_mb": predicted_vram_mb(act, config, b)}
                                      for b in config.batch_sizes],
            },
        },
        "quality": {
            "simulated": simulated,
            "events": len(events),
            "warmup_passes": warmup_passes,
            "warmup_prefill_calls": runner.warmup_prefills,
            "warmup_decode_calls": runner.warmup_decodes,
            "events_below_min_duration": short,
            "energy_counter_reads_missing": missing,
            "stopped_early": bool(stopped),
            "oom": oom_batch,
            "load_model": (
                {
                    "prefill": f"min(1, {config.prefill_level_base} + {config.prefill_level_per_batch} * batch_size)",
                    "decode": f"min(1, {config.decode_level_base} + {config.decode_level_per_batch} * batch_size)",
                    "padding": "declared level held until min_event_s",
                }
                if simulated else None
            ),
        },
        "checks": {
            "warmup_ran": warmup_passes == expected_warmups and runner.warmup_prefills == expected_warmups,
            "events_matched": all(e["t_end_ns"] >= e["t_start_ns"] for e in events) and bool(events),
            "batch_sizes_increasing": all(a <= b for a, b in zip(order, order[1:])),
            "min_event_duration_met": not short,
            "energy_counter_read": (missing == 0) if has_counter else None,
        },
        "events": events,
    }
