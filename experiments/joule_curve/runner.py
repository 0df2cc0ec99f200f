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

Events last at least ``min_event_s`` by repeating the pass (a decode pass replays from the
same cache, rewound), never by idling, which would bill idle energy to tokens; the event
ends with a synchronisation, so its window holds exactly its passes. The passes run on
the context's accelerator: on a GPU the model itself, on a simulated board the board's
compute model (same calls, same loop; its energy law is reported as ``truth``).

The model is ``config.model`` (a built-in name of any supported family, a local config.json
or model directory) in ``config.dtype``; its memory model's figures (weights, KV cache per
token, the predicted VRAM per batch size) are reported beside what ran.
"""

from __future__ import annotations

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
    """Run the warmups and the measured events on ``ctx``'s accelerator; returns the report dict."""
    acc = ctx.accelerator
    shape, act = _model_shape(config)
    dtype = config.dtype
    # The model is built before the measurement window opens.
    try:
        with translate_cuda_oom():
            model = acc.build_model(config.model, dtype=dtype, attn_implementation=config.attn_implementation)
    except OutOfDeviceMemory as exc:
        raise ExperimentError(f"{NAME}: the model {config.model!r} ({dtype}) does not fit on the device: {exc}") from None
    dims = acc.model_dims(model)
    truth = acc.energy_truth(model, config.input_tokens, config.output_tokens)
    runner = _EventRunner(ctx, config, model, float(config.min_event_s))
    events: list[dict] = []
    warmup_passes = 0
    stopped, oom_batch = False, None
    with ctx.phase(NAME):
        ctx.progress(NAME, 0.0)
        for i, batch in enumerate(config.batch_sizes):
            if ctx.should_stop():
                stopped = True
                break
            ids = acc.synthetic_batch(batch, config.input_tokens, dims["vocab_size"], config.seed + batch)
            try:
                warmup_passes += runner.warmup(batch, ids)
                _gap(ctx, config.gap_s)  # the first event's edge is corrected against idle, not the warmup
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
    return _report(ctx, config, events, runner, warmup_passes, stopped, oom_batch, shape, act, truth)


# -- the model (where its shape and dtype enter) -----------------------------------------------


def _model_shape(config: JouleCurveConfig):
    """(shape, memory model) of ``config.model`` in ``config.dtype``, checked against the
    position limit before anything is built."""
    shape = model_shapes.resolve(config.model)
    act = ActivationModel.from_shape(shape, config.dtype, attn_implementation=config.attn_implementation)
    if config.input_tokens + config.output_tokens > shape.n_positions:
        raise ExperimentError(
            f"{NAME}: input_tokens + output_tokens = {config.input_tokens + config.output_tokens} exceeds the "
            f"position limit {shape.n_positions} of {config.model}; lower them in the joule_curve config")
    return shape, act


def predicted_vram_mib(act: ActivationModel, config: JouleCurveConfig, batch: int) -> float:
    """Weights plus the larger of the prefill's and the last decode step's peak, MiB."""
    return (act.weight_bytes() + act.serve_peak_bytes(batch, config.input_tokens, config.output_tokens)) / MiB


def _gap(ctx: RunContext, seconds: float) -> None:
    if seconds > 0:
        ctx.sleep(seconds)


class _EventRunner:
    """Runs warmups and marked events on the accelerator; counts passes."""

    def __init__(self, ctx: RunContext, config: JouleCurveConfig, model, min_event_s: float):
        self.ctx, self.config, self.model, self.min_event_s = ctx, config, model, min_event_s
        self.acc = ctx.accelerator
        self.warmup_prefills = 0
        self.warmup_decodes = 0

    def warmup(self, batch: int, ids) -> int:
        """The unmeasured prefill+decode passes for this batch size; returns how many ran."""
        ctx, cfg, acc = self.ctx, self.config, self.acc
        done = 0
        with ctx.phase(f"{NAME}.warmup", batch_size=batch):
            try:
                for _ in range(cfg.warmup_repetitions):
                    with translate_cuda_oom():
                        pre = acc.prefill(self.model, ids)
                        self.warmup_prefills += 1
                        acc.decode(self.model, pre, cfg.output_tokens)
                        self.warmup_decodes += 1
                    pre = None
                    done += 1
            finally:
                acc.synchronize()
        return done

    def prefill_event(self, event_id: str, batch: int, ids) -> tuple[dict, object]:
        """One measured prefill event; returns its record and the last pass's result."""
        last: list = [None]

        def one_pass() -> tuple[int, int]:
            last[:] = [self.acc.prefill(self.model, ids)]
            return last[0].input_tokens, 0

        ev = self._event(event_id, "prefill", batch, one_pass, batch * self.config.input_tokens, 0)
        return ev, last[0]

    def decode_event(self, event_id: str, batch: int, pre) -> dict:
        """One measured decode event from ``pre``'s KV cache (rewound between passes)."""
        n = self.config.output_tokens
        state = {"decoded": 0}
        acc = self.acc

        def one_pass() -> tuple[int, int]:
            if state["decoded"]:
                acc.rewind(pre.past, state["decoded"])
            d = acc.decode(self.model, pre.past, n, pre.next_ids)
            state["decoded"] = n
            return 0, d.output_tokens

        return self._event(event_id, "decode", batch, one_pass, 0, batch * n)

    def _event(self, event_id: str, phase: str, batch: int, one_pass: Callable[[], tuple[int, int]],
               in_per_pass: int, out_per_pass: int) -> dict:
        ctx, cfg, acc = self.ctx, self.config, self.acc
        attrs = {"event_id": event_id, "phase": phase, "batch_size": batch, "context_tokens": cfg.input_tokens}
        e0 = ctx.energy_counter_j()
        t0 = ctx.mark(EVENT_START, **attrs, input_tokens=in_per_pass, output_tokens=out_per_pass, energy_counter_j=e0)
        tokens_in = tokens_out = passes = 0
        compute_ns = 0
        aborted = None
        try:
            with translate_cuda_oom():
                while passes == 0 or time.monotonic_ns() - t0 < self.min_event_s * 1e9:
                    c0 = time.monotonic_ns()
                    n_in, n_out = one_pass()
                    compute_ns += time.monotonic_ns() - c0
                    tokens_in, tokens_out, passes = tokens_in + n_in, tokens_out + n_out, passes + 1
                acc.synchronize()  # the window ends when the work does
        except BaseException as exc:
            aborted = type(exc).__name__
            raise
        finally:
            e1 = ctx.energy_counter_j()
            end_attrs = {"input_tokens": tokens_in, "output_tokens": tokens_out, "passes": passes,
                         "energy_counter_j": e1}
            if aborted:
                end_attrs["aborted"] = aborted
                acc.synchronize()
            t1 = ctx.mark(EVENT_END, **attrs, **end_attrs)
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
        }


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _report(ctx, config, events, runner, warmup_passes, stopped, oom_batch, shape, act, truth) -> dict:
    min_event_s = float(config.min_event_s)
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
                "passes_median": _median(e["passes"] for e in rows),
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
            "truth": truth,
            "model": {
                "name": shape.name, "builtin": shape.builtin,
                "shape": shape.name if shape.builtin else None,  # the older key
                "model_path_given": not shape.builtin,
                "ran": "on the simulated board's compute model" if ctx.simulated else "on the device",
                **act.figures(),
                "dtype": config.dtype,
                "attn_implementation": config.attn_implementation,
                "input_tokens": config.input_tokens,
                "output_tokens": config.output_tokens,
                "predicted_vram_mib": [{"batch_size": b, "vram_mib": predicted_vram_mib(act, config, b)}
                                      for b in config.batch_sizes],
            },
        },
        "quality": {
            "simulated": ctx.simulated,
            "events": len(events),
            "warmup_passes": warmup_passes,
            "warmup_prefill_calls": runner.warmup_prefills,
            "warmup_decode_calls": runner.warmup_decodes,
            "events_below_min_duration": short,
            "energy_counter_reads_missing": missing,
            "stopped_early": bool(stopped),
            "oom": oom_batch,
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
