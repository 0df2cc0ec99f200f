"""CLI: devices and poll, and one clear line with exit code 2 for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cluster.cli import main

REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's usage errors, numeric option types included
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_devices_json_lists_simulated_devices(capsys):
    code, out, _ = _run(capsys, "devices", "--device", "sim:h100-sxm,sim:rtx4080-laptop", "--json")
    assert code == 0
    devices = json.loads(out)
    assert [d["info"]["simulated"] for d in devices] == [True, True]
    # one code path: a simulated board is the NVML backend on the simulated NVML library
    assert [(d["backend"], d["simulated"]) for d in devices] == [("nvml", True), ("nvml", True)]
    assert devices[0]["info"]["vram_total_mib"] == 81559  # MiB, as the profile says (bytes converted once)
    assert devices[0]["capabilities"]["power_instant_w"] is True
    assert len(devices[0]["fingerprint"]["fingerprint"]) == 64


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["poll", "--device", "gpu7"], "unknown device spec 'gpu7'"),
        (["poll", "--device", "sim:h100-sxm", "--period-ms", "0.5"], "--period-ms 0.5"),
        (["poll", "--device", "sim:h100-sxm", "--period-ms", "70000"], "1..60000 ms"),
        (["poll", "--device", "sim:h100-sxm", "--out", "/proc/fleetphysics-nope"], "cannot write there"),
        (["poll", "--device", "sim:no-such-board"], "unknown simulated profile"),
        (["bench", "poller", "--period-ms", "0"], "argument --period-ms: '0' is out of range"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, needle):
    code, _, err = _run(capsys, *argv)
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1


def test_malformed_profile_file_via_the_console_script(tmp_path):
    bad = tmp_path / "board.yaml"
    bad.write_text("name: x\nidle_power_w: 20\n")
    proc = subprocess.run([sys.executable, "-m", "cluster.cli", "poll", "--device", f"sim:{bad}"], capture_output=True,
                          text=True, cwd=REPO_ROOT, timeout=120)
    assert proc.returncode == 2
    assert str(bad) in proc.stderr and "is required" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.realtime
def test_poll_json_prints_stats(capsys, tmp_path):
    code, out, _ = _run(capsys, "poll", "--device", "sim:a100-sxm", "--period-ms", "50", "--seconds", "1",
                        "--out", str(tmp_path), "--json")
    assert code == 0
    stats = json.loads(out)
    assert stats["samples"] >= 15 and stats["period_ms"] == 50
