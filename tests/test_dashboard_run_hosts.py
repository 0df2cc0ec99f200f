"""The Run explorer shows a run's state and every host's (run_hosts), on a small warehouse."""

from __future__ import annotations

from pathlib import Path

from warehouse.artifacts import ingest_paths
from warehouse.run_state import record_run_state
from warehouse_fixtures import write_device_dir

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"


def test_run_explorer_says_which_host_was_lost_and_why(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    for host, dev in (("ubuntu-a1b2c3d4", "dev-0"), ("ubuntu-ffee0011", "dev-1")):
        write_device_dir(tmp_path / "runs", "run-0001", host, dev, rows=500)
    path = tmp_path / "fleet.duckdb"
    ingest_paths(path, [tmp_path / "runs"])
    record_run_state(path, "run-0001", "partial", {
        "ubuntu-a1b2c3d4": {"node_id": "a1b2c3d4" * 7, "hostname": "ubuntu", "state": "done"},
        "ubuntu-ffee0011": {"node_id": "ffee0011" * 7, "hostname": "ubuntu", "state": "lost",
                            "reason": "node ffee0011 marked dead"}})
    monkeypatch.setenv("FLEETPHYSICS_WAREHOUSE", str(path))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    at = at.switch_page("app_pages/run_explorer.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert any(c.value.startswith("Run run-0001: partial · 1 done, 1 lost") for c in at.caption)
    [hosts] = [df.value for df in at.dataframe if "reason" in df.value.columns]
    lost = hosts[hosts["state"] == "lost"].iloc[0]
    assert (lost["host"], lost["reason"], lost["devices_stored"]) == ("ubuntu-ffee0011", "node ffee0011 marked dead", 1)
