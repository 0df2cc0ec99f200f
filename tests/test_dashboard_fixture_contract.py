"""The dashboard fixture never hides a broken fleet job behind its synthetic warehouse."""

from __future__ import annotations

import subprocess

import pytest

import dashboard_fixture as fixture


def _failed_job(*args, **kwargs):
    return subprocess.CompletedProcess(args[0], 1, stdout="", stderr="Traceback ...\nKeyError: 'idle_robust_w'\n")


def test_a_failed_fleet_job_fails_the_fixture(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(fixture.FALLBACK_ENV, raising=False)
    monkeypatch.setattr(fixture.subprocess, "run", _failed_job)
    with pytest.raises(RuntimeError, match="idle_robust_w"):
        fixture.build_fleet_warehouse(tmp_path)
    assert not (tmp_path / "fleet.duckdb").exists()


def test_the_synthetic_warehouse_stands_in_only_when_asked(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(fixture.FALLBACK_ENV, "1")
    monkeypatch.setattr(fixture.subprocess, "run", _failed_job)
    built = fixture.build_fleet_warehouse(tmp_path)
    assert built.builder.startswith("ingest_tables (fallback: run_fleet failed:")
    assert "idle_robust_w" in built.builder
