"""`fleetphysics bench analysis` runs end to end on a small trace (no timing asserted)."""

from __future__ import annotations

import json

from cluster.cli import main


def test_bench_analysis_prints_its_figures(capsys):
    assert main(["bench", "analysis", "--hours", "0.03", "--hz", "20", "--devices", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"] == 2 * int(0.03 * 3600 * 20) and out["devices"] == 2 and out["events"] > 10
    assert out["steps"] > 40  # the training coupling (and its bootstrap) is timed too
    assert set(out["per_analysis_s"]) == {"baseline", "instrument_response", "heat_soak", "joule_curve",
                                          "training_coupling"}
    assert out["seconds"] >= 0 and out["rows_per_s"] > 0
    # the same-run baseline: the direct bootstrap on the same traces gives the same figures
    assert out["baseline"]["same_figures"] is True and out["baseline"]["training_coupling_cpu_s"] > 0
    assert out["ratios"]["training_coupling_cpu"] > 0 and out["target_s"] == 5.0


def test_bench_analysis_runs_the_products_report_path():
    """What is timed is experiments.reports.analyse_all on runner results: every report comes back."""
    from cluster import bench_analysis as ba
    from experiments import reports

    dev = ba.synth_device("h100-sxm", 0.05 * 3600, 20.0, 1)
    out, tables = reports.analyse_all(dev["results"], ba.bench_configs(), dev["trace"],
                                      __import__("pandas").DataFrame({"t_ns": [], "name": []}), dev["info"])
    assert set(out) == set(ba.EXPERIMENTS) and all(r["checks"]["error"] is None for r in out.values())
    assert tables["events"].num_rows == len(dev["events"])
    assert out["training_coupling"]["figures"]["verdict"] not in (None, "insufficient data")
    assert out["training_coupling"]["figures"].get("p_value") is not None  # the bootstrap ran


def test_reports_joule_events_equal_the_per_event_analysis():
    """reports' vectorised per-event energy gives what event_energy gives one event at a time."""
    import numpy as np

    from cluster import bench_analysis as ba
    from experiments import reports
    from experiments.analysis import energy

    dev = ba.synth_device("rtx4080-laptop", 0.05 * 3600, 20.0, 2)
    res = dev["results"]["joule_curve"]
    per, idle = reports._joule_events(res, dev["trace"], None, None)
    evs = res["events"]
    p_idle = idle["power_w"]
    assert idle["source"] == "idle finder" and p_idle is not None  # the bench's trace opens on idle
    series = energy.EnergySeries(dev["trace"])
    bounds = [t for e in evs for t in (e["t_start_ns"], e["t_end_ns"])]
    for e, row in zip(evs, per.to_dict("records")):
        one = energy.event_energy(series, e["t_start_ns"], e["t_end_ns"], p_idle, other_boundaries_ns=bounds)
        for key in ("energy_raw_j", "energy_net_j", "energy_integrated_j", "sigma_e_j", "edges_corrected"):
            a, b = one[key], row[key]
            assert (a is None and np.isnan(b)) or a == b, (key, a, b)
        assert one["quality"] == row["quality"] == row["energy_quality"]
