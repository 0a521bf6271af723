"""Notebook 01 in a real browser: JupyterLab, headless Chromium through Playwright, the slice viewer's slider.

Skipped where Chromium, Playwright or JupyterLab is missing; `.ci/run` installs
Debian's `chromium` so that CI runs it. Playwright drives the system browser
(its own browser download is not available here).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("jupyterlab")
sync_api = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("LIVERLIB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
# Flags for a closed network and a root user (the machine's notes): no sandbox, no background traffic.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (apt-get install chromium)")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer at {url} in {seconds:.0f} s")


@pytest.fixture()
def lab(tmp_path):
    """JupyterLab on a free local port with a token, serving a copy of notebook 01."""
    (tmp_path / "notebooks").mkdir()
    shutil.copy(ROOT / "notebooks" / "01_data.ipynb", tmp_path / "notebooks")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "data").symlink_to(ROOT / "tests" / "data")  # the notebook's ../tests/data real CT
    settings = tmp_path / "jupyter" / "lab" / "user-settings" / "@jupyterlab"
    for extension, name, values in (
        ("notebook-extension", "tracker", {"windowingMode": "none"}),  # every cell in the page, to be read
        ("apputils-extension", "notification", {"fetchNews": "false", "checkForUpdates": False}),
    ):
        (settings / extension).mkdir(parents=True, exist_ok=True)
        (settings / extension / f"{name}.jupyterlab-settings").write_text(json.dumps(values))
    port, token = _free_port(), "liverlib-browser-test"
    env = {**os.environ, "LIVERLIB_CACHE": str(tmp_path / "cache"), "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    env.pop("LIVERLIB_HEADLESS", None)  # the kernel must show the interactive viewer, not the montage
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}", "--ip=127.0.0.1",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path / 'notebooks'}",
               "--ServerApp.disable_check_xsrf=True", "--LabApp.news_url=", "--LabApp.check_for_updates_class="
               "jupyterlab.NeverCheckForUpdate"]
    log = (tmp_path / "lab.log").open("w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for(f"http://127.0.0.1:{port}/api/status?token={token}", 60)
        yield f"http://127.0.0.1:{port}", token, tmp_path
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _viewer_image(page) -> str:
    """The src of the slice viewer's plane (a PNG data URL)."""
    return page.locator(".widget-vbox .jp-OutputArea-output img").first.get_attribute("src")


def test_notebook_01_runs_in_chromium_and_the_slider_moves_the_plane(lab):
    base, token, folder = lab
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{base}/lab/tree/01_data.ipynb?token={token}")
        # Ready when the notebook's cells are shown and its kernel reports idle in the status bar.
        page.wait_for_function(
            """() => document.querySelectorAll('.jp-Notebook .jp-CodeCell').length > 1
                && /\\(ipykernel\\) \\| Idle/.test(document.querySelector('#jp-main-statusbar')?.textContent || '')""",
            timeout=120_000,
        )
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()  # Run > Run All Cells
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        # Done when every code cell has an execution count, or a cell raised (Run All stops there).
        page.wait_for_function(
            """() => {
                const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
                const done = prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
                return done || document.querySelector('.jp-OutputArea-output .ansi-red-fg') !== null;
            }""",
            timeout=600_000,
        )
        page.keyboard.press("Control+s")  # the saved notebook tells what ran and what raised
        page.wait_for_selector(".jp-mod-dirty", state="detached", timeout=30_000)
        saved = json.loads((folder / "notebooks" / "01_data.ipynb").read_text())
        code = [c for c in saved["cells"] if c["cell_type"] == "code"]
        raised = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not raised, f"{raised[0]['ename']}: {raised[0]['evalue']}"
        assert all(c.get("execution_count") for c in code)
        slider = page.locator(".widget-slider .ui-slider-handle, .widget-slider .noUi-handle").first
        slider.wait_for(timeout=60_000)
        page.wait_for_function("() => document.querySelector('.widget-vbox .jp-OutputArea-output img') !== null",
                               timeout=60_000)
        before = _viewer_image(page)
        readout = page.locator(".widget-slider .widget-readout").first.inner_text()
        slider.scroll_into_view_if_needed()
        slider.focus()
        for _ in range(3):
            page.keyboard.press("ArrowRight" if int(readout) == 0 else "ArrowLeft")
        page.wait_for_function(
            "(old) => { const img = document.querySelector('.widget-vbox .jp-OutputArea-output img');"
            " return img !== null && img.getAttribute('src') !== old; }",
            arg=before, timeout=60_000,
        )
        after_readout = page.locator(".widget-slider .widget-readout").first.inner_text()
        assert after_readout != readout and _viewer_image(page) != before
        shot = folder / "runs" / "interactive" / "figures" / "browser_slice_viewer.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.locator(".widget-vbox").first.screenshot(path=str(shot))
        browser.close()
    assert shot.stat().st_size > 10_000
    assert not errors, errors
    # The notebook really ran in that kernel: it wrote the run's splits.
    splits = json.loads((folder / "runs" / "interactive" / "splits.json").read_text())
    assert len(splits["folds"]) == 5
