"""The dashboard in a real browser: `fleetphysics dashboard` on 127.0.0.1, Chromium via
playwright, every page opened, its charts awaited, no Streamlit exception on screen, one
screenshot per page under test-artifacts/."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from dashboard_fixture import FleetWarehouse, fleet_warehouse  # noqa: F401 - the session fixture

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# (url path, title on the page, what to wait for): every page of the app, opened by its URL;
# Fleet health is the default page, served at /.
PAGES = tuple(("" if i == 0 else url, title, "dataframe" if file == "sql.py" else "plotly")
              for i, (file, title, _icon, url) in enumerate(__import__("dashboard.ui", fromlist=["PAGES"]).PAGES))
SELECTORS = {"plotly": '[data-testid="stPlotlyChart"]', "dataframe": '[data-testid="stDataFrame"]'}

def _has_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


# Checked at collection, so a machine without a browser skips before the fixture warehouse
# is built.
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).is_file(),
                       reason=f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)"),
    pytest.mark.skipif(not _has_playwright(),
                       reason="the playwright Python package is missing: pip install playwright "
                              "(no `playwright install`: the test drives /usr/bin/chromium)"),
]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(port: int, proc: subprocess.Popen, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    url = f"http://127.0.0.1:{port}/_stcore/health"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the dashboard exited with {proc.returncode} before it served a page")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"the dashboard did not answer on {url} within {timeout_s:g} s")


@pytest.fixture
def dashboard_server(fleet_warehouse: FleetWarehouse):  # noqa: F811 - pytest fixture injection
    """`fleetphysics dashboard` on a free port against the fixture warehouse; killed by PID."""
    port = _free_port()
    log = tempfile.NamedTemporaryFile(prefix="dashboard-", suffix=".log", delete=False)
    env = dict(os.environ, PYTHONPATH=str(REPO), STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    proc = subprocess.Popen([sys.executable, "-m", "cluster.cli", "dashboard", "--warehouse",
                             str(fleet_warehouse.path), "--port", str(port)],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_healthy(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        # The CLI runs streamlit as its child, in the session started above: end both by PID.
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        log.close()
        os.unlink(log.name)


def test_every_page_renders_in_chromium(dashboard_server: str, fleet_warehouse: FleetWarehouse) -> None:  # noqa: F811
    """Open each page, wait for its charts (the SQL page: its table), assert no exception
    element, and keep a screenshot per page."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    profile_dir = tempfile.mkdtemp(prefix="chromium-profile-")
    problems = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                profile_dir, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1600, "height": 1000})
            try:
                page = browser.new_page()
                for i, (url_path, title, wait_for) in enumerate(PAGES):
                    page.goto(f"{dashboard_server}/{url_path}", wait_until="domcontentloaded", timeout=60_000)
                    page.get_by_role("heading", name=title).first.wait_for(timeout=60_000)
                    page.locator(SELECTORS[wait_for]).first.wait_for(state="visible", timeout=60_000)
                    if wait_for == "plotly":
                        # Plotly draws its SVG after the element appears.
                        page.locator(f'{SELECTORS["plotly"]} .main-svg').first.wait_for(timeout=30_000)
                    _wait_until_idle(page)
                    name = url_path or "fleet-health"
                    page.screenshot(path=str(ARTIFACTS / f"dashboard-{i + 1:02d}-{name}.png"), full_page=True)
                    if page.locator('[data-testid="stException"]').count():
                        problems.append(f"{name}: {page.locator('[data-testid=stException]').first.inner_text()[:500]}")
                    body = page.locator("section.main, [data-testid='stMain']").first.inner_text()
                    for host in fleet_warehouse.hosts:
                        if url_path not in ("drift", "run-explorer", "sql") and host not in body:
                            problems.append(f"{name}: host {host} is not on the page")
                    if url_path != "sql" and "SIMULATED" not in body:
                        problems.append(f"{name}: the simulated badge is missing")
                # A filter in the URL narrows the view, and stays in the URL from page to page.
                gpu = fleet_warehouse.gpus[0]
                page.goto(f"{dashboard_server}/?gpu={gpu}", wait_until="domcontentloaded", timeout=60_000)
                page.locator(f'{SELECTORS["plotly"]} .main-svg').first.wait_for(timeout=60_000)
                _wait_until_idle(page)
                page.screenshot(path=str(ARTIFACTS / f"dashboard-{len(PAGES) + 1:02d}-fleet-health-filtered.png"), full_page=True)
                body = page.locator("[data-testid='stMain']").first.inner_text()
                for host, host_gpu in fleet_warehouse.gpu_of_host:
                    if (host in body) != (host_gpu == gpu):
                        problems.append(f"/?gpu={gpu}: host {host} ({host_gpu}) {'shown' if host in body else 'missing'}")
                page.get_by_role("link", name="Heat soak").click()
                page.wait_for_url("**/heat-soak**", timeout=60_000)
                page.get_by_role("heading", name="Heat soak").first.wait_for(timeout=60_000)
                if f"gpu={gpu}" not in page.url:
                    problems.append(f"the GPU filter was lost on the way to Heat soak ({page.url})")
            finally:
                browser.close()
    finally:
        shutil.rmtree(profile_dir, ignore_errors=True)
    assert not problems, "\n".join(problems)


def _wait_until_idle(page, timeout_s: float = 30.0) -> None:
    """Wait until Streamlit reports no script running (the status widget disappears)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if page.locator('[data-testid="stStatusWidget"]').count() == 0:
            page.wait_for_timeout(400)
            if page.locator('[data-testid="stStatusWidget"]').count() == 0:
                return
        page.wait_for_timeout(200)
