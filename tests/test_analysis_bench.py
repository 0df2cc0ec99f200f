"""`fleetphysics bench analysis` runs end to end on a small trace (no timing asserted)."""

from __future__ import annotations

import json

from cluster.cli import main


def test_bench_analysis_prints_its_figures(capsys):
    assert main(["bench", "analysis", "--hours", "0.03", "--hz", "20", "--devices", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"] == 2 * int(0.03 * 3600 * 20) and out["devices"] == 2 and out["events"] > 10
    assert set(out["per_analysis_s"]) == {"baseline", "instrument_response", "heat_soak", "energy"}
    assert out["seconds"] >= 0 and out["rows_per_s"] > 0
