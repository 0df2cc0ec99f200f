"""bench poller runs both designs, reports their progress and prints exactly the documented keys
(no timing asserted)."""

from __future__ import annotations

import pytest

from cluster.bench_poller import BENCH_KEYS, run_bench

pytestmark = pytest.mark.realtime


def test_bench_poller_reports_both_designs_with_the_documented_keys():
    heard = []
    doc = run_bench(None, devices=2, period_ms=20.0, seconds=1.5, load="none", progress=lambda *r: heard.append(r))
    assert list(doc) == list(BENCH_KEYS) + ["in_process_thread", "in_process_thread_tuned", "ratios"]
    assert list(doc["in_process_thread"]) == list(BENCH_KEYS)
    tuned = doc["in_process_thread_tuned"]
    assert list(tuned) == list(BENCH_KEYS) + ["scheduling_policy"]
    assert tuned["scheduling_policy"] in ("SCHED_FIFO", "nice-10", "default")  # it asked, as the poller does
    assert set(doc["ratios"]) == {"thread_p99_lateness", "tuned_thread_p99_lateness", "thread_dropped_ticks",
                                  "tuned_thread_dropped_ticks"}
    for part in (doc, doc["in_process_thread"], tuned):
        assert part["devices"] == 2 and part["samples"] > 0
        assert set(part["lateness_ms"]) == {"p50", "p99", "max"} and set(part["dt_ms"]) == {"median", "p95", "p99"}
    # Each design's run is reported in seconds, ours first, each ending done.
    phases = list(dict.fromkeys(phase for phase, _, _ in heard))
    assert phases == ["poller process", "in-process thread", "tuned in-process thread"]
    for phase in phases:
        assert [r for r in heard if r[0] == phase][-1] == (phase, 2, 2)
