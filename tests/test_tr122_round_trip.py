"""A TR122 pack built from the report's section 3 schemas survives import and export: every
key the report defines comes back with its value (quality lower-case, power_samples as the
report counts them)."""

from __future__ import annotations

import csv
import json

import pytest

from warehouse.export import export_tr122
from warehouse.importers.tr122 import import_tr122
from warehouse.query import query

# TR122 section 3.3, verbatim
BASELINE = {
    "idle_watts_mean": 20.709,
    "idle_watts_std": 9.965,
    "idle_watts_mean_robust": 24.1,
    "floor_fraction": 0.15,
    "idle_temp_c": 39.8259385665529,
    "fake_idle_flag": False,
    "idle_gpu_util_p95": 0,
    "idle_watts_min": 1.2,
    "idle_watts_max": 26.424,
}
# TR122 section 3.4's key fields (values from its run 20251225_190610)
METADATA = {
    "schema_version": 1, "run_id": "20251225_190610", "run_state": "completed", "end_reason": "equilibrium",
    "poller": {"median_dt_ms": 100.0, "p95_dt_ms": 100.4, "max_gap_ms": 743.93, "gap_count": 1, "quality": "degraded"},
    "baseline": BASELINE,
    "git": {"hash": "0123456789abcdef0123456789abcdef01234567"},
}
TRACE_COLUMNS = ["t_ns", "power_w", "temp_c", "sm_clock_mhz", "mem_clock_mhz", "util_gpu", "util_mem",
                 "vram_used_mib", "read_ok", "dt_s"]


def _trace_rows(n: int = 200) -> list[list]:
    rows = []
    for i in range(n):
        t_ns = 5_000_000_000 + i * 100_000_000
        ok = i % 37 != 5
        rows.append([t_ns, f"{(24.1 + (110.0 if 60 <= i < 140 else 0.0)):.3f}" if ok else "",
                     f"{40 + i // 50:.1f}", 2100 + (i % 2) * 15, 9001, 100 if 60 <= i < 140 else 0, 12,
                     f"{4200.5 + i:.1f}", "true" if ok else "false", "" if i == 0 else "0.1"])
    return rows


def _events(trace: list[list]) -> list[dict]:
    times = [r[0] for r in trace]
    out = []
    for k, (a, b, phase, quality) in enumerate([(6_000_000_000, 6_004_000_000, "prefill", "no_data"),
                                                 (11_000_000_000, 11_350_000_000, "decode", "gappy"),
                                                 (12_000_000_000, 13_500_000_000, "decode", "good")]):
        out.append({
            "event_id": f"bs1_rep{k}_{phase}", "phase": phase, "t_start_ns": a, "t_end_ns": b,
            "input_tokens": 64, "output_tokens": 0 if phase == "prefill" else 64, "batch_size": 1,
            "tokens_per_second": 182.5 + k, "energy_joules": 12.5 * (k + 1), "operational_joules": 3.25 * (k + 1),
            "energy_quality": quality, "gap_fraction": 0.02 * k,
            # section 3.1: rows of power_trace.csv with t_start_ns <= t_ns <= t_end_ns
            "power_samples": sum(a <= t <= b for t in times),
        })
    return out


@pytest.fixture()
def pack(tmp_path):
    d = tmp_path / "tr122_v2"
    d.mkdir()
    trace = _trace_rows()
    with open(d / "power_trace.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(TRACE_COLUMNS)
        w.writerows(trace)
    (d / "generation_events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in _events(trace)))
    (d / "baseline.json").write_text(json.dumps(BASELINE, indent=2))
    (d / "run_metadata.json").write_text(json.dumps(METADATA, indent=2))
    return d


def _csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_section_3_pack_round_trips(pack, tmp_path):
    wh = tmp_path / "w.duckdb"
    result = import_tr122(wh, pack)
    assert result["run_id"] == "20251225_190610" and result["rows"] == 200
    # the baseline's idle power arrives, not only its floor fraction
    row = query(wh, "SELECT idle_robust_w, idle_mean_w, idle_std_w, floor_fraction, fake_idle FROM baselines")
    assert row.iloc[0].tolist() == [24.1, 20.709, 9.965, 0.15, False]
    assert query(wh, "SELECT git_hash FROM runs")["git_hash"].tolist() == [METADATA["git"]["hash"]]

    out = tmp_path / "exported"
    export_tr122(wh, result["run_id"], out)

    baseline = json.loads((out / "baseline.json").read_text())
    assert {k: baseline[k] for k in BASELINE} == BASELINE

    events = [json.loads(line) for line in (out / "generation_events.jsonl").read_text().splitlines()]
    original = _events(_trace_rows())
    assert len(events) == len(original)
    for got, want in zip(events, original):
        assert {k: got[k] for k in want} == want  # quality lower-case, power_samples as counted

    meta = json.loads((out / "run_metadata.json").read_text())
    for key in ("schema_version", "run_id", "run_state", "end_reason", "poller", "git"):
        assert meta[key] == METADATA[key], key
    assert {k: meta["baseline"][k] for k in BASELINE} == BASELINE

    got, want = _csv(out / "power_trace.csv"), _csv(pack / "power_trace.csv")
    assert list(got[0]) == TRACE_COLUMNS and len(got) == len(want)
    for a, b in zip(got, want):
        for column in TRACE_COLUMNS:
            if column == "read_ok":
                assert a[column].lower() == b[column]
            elif column == "dt_s" and b[column] == "":
                continue  # the first row's step is unknown; the importer fills none in
            else:
                assert (float(a[column]) if a[column] else None) == (float(b[column]) if b[column] else None), column

    # and the exported pack imports to the same run again (idempotent)
    again = tmp_path / "again.duckdb"
    assert import_tr122(again, out)["run_id"] == result["run_id"]
    assert query(again, "SELECT idle_robust_w FROM baselines")["idle_robust_w"].tolist() == [24.1]


def test_run_metadata_baseline_stands_in_for_a_missing_baseline_json(pack, tmp_path):
    (pack / "baseline.json").unlink()
    wh = tmp_path / "w.duckdb"
    import_tr122(wh, pack)
    assert query(wh, "SELECT idle_robust_w, fake_idle FROM baselines").iloc[0].tolist() == [24.1, False]
