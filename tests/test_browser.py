"""Week notebooks in a real browser: JupyterLab in headless Chromium, widgets moved by hand.

Starts JupyterLab from the course environment on localhost, opens each solution notebook that
has a trajectory explorer, runs all cells, moves the first learning-rate slider and presses
Play, and checks that the plot changes and no widget fails to render. Notebooks with a
Newton–Schulz widget (Week 8) get their steps slider and preset moved the same way. Screenshots
go to build/screenshots/. Skips, saying why, where Chromium or Playwright is not installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = REPO / "build" / "screenshots"
WEEKS = [
    p.parent.name
    for p in sorted(REPO.glob("solutions/*/*.ipynb"))
    if "TrajectoryExplorer(" in p.read_text()
]
NS_WEEKS = [
    p.parent.name
    for p in sorted(REPO.glob("solutions/*/*.ipynb"))
    if "NewtonSchulzExplorer(" in p.read_text()
]
TOKEN = "course-browser-test"

playwright = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
if not Path(CHROMIUM).exists():
    pytest.skip(f"Chromium not found at {CHROMIUM}", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """JupyterLab serving copies of the solution notebooks; yields its base URL."""
    root = tmp_path_factory.mktemp("lab")
    for week in sorted(set(WEEKS) | set(NS_WEEKS)):
        shutil.copytree(REPO / "solutions" / week, root / week)
    port = _free_port()
    log = (root / "lab.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
            f"--port={port}", "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={root}",
        ],
        stdout=log, stderr=subprocess.STDOUT,
        # A private workspace: the default one would reopen notebooks from earlier sessions.
        env=dict(os.environ, OMP_NUM_THREADS="1", JUPYTERLAB_WORKSPACES_DIR=str(root / "ws")),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start:\n" + (root / "lab.log").read_text()[-3000:])
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with playwright.sync_playwright() as p:
        # Flags for a root user on a machine without network or GPU.
        chromium = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-quic",
            ],
        )  # fmt: skip
        yield chromium
        chromium.close()


def _wait_until_all_cells_ran(page, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    quiet_since = None
    while time.monotonic() < deadline:
        prompts = page.locator(".jp-InputPrompt").all_inner_texts()
        busy = any("*" in p for p in prompts)
        idle = page.locator("text=| Idle").count() > 0
        if not busy and idle:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 3:
                return
        else:
            quiet_since = None
        time.sleep(0.5)
    pytest.fail("the notebook did not finish running in time")


def _run_all(lab: str, browser, week: str):
    """A page with the week's solution notebook open, every cell run, and no widget error."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    # A workspace of its own, reset: otherwise JupyterLab reopens the notebooks of the weeks
    # tested before, and the first notebook on the page is a hidden tab.
    page.goto(f"{lab}/lab/workspaces/{week}/tree/{week}/{week}.ipynb?reset&token={TOKEN}")
    # The first page load also starts JupyterLab's front end and a kernel: give a busy
    # machine time.
    page.wait_for_selector(".jp-Notebook", timeout=180_000)
    page.wait_for_selector("text=| Idle", timeout=180_000)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    _wait_until_all_cells_ran(page)

    text = page.inner_text("body")
    assert "Error displaying widget" not in text
    assert "Error rendering" not in text
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    tracebacks = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t]
    assert not tracebacks, tracebacks[:2]
    return page


@pytest.mark.parametrize("week", WEEKS)
def test_explorer_moves_in_the_browser(lab: str, browser, week: str) -> None:
    page = _run_all(lab, browser, week)
    explorer = page.locator(".widget-vbox:has(.widget-play)").first
    explorer.scroll_into_view_if_needed()
    canvas = explorer.locator(".jupyter-matplotlib-canvas-div").first
    canvas.wait_for(timeout=30_000)
    time.sleep(1)
    before = canvas.screenshot(path=str(SCREENSHOTS / f"{week}-1-initial.png"))

    # A smaller learning rate: the path stays finite, so every step of the replay shows.
    handle = explorer.locator(".widget-slider .noUi-handle").first
    handle.focus()
    for _ in range(6):
        handle.press("ArrowLeft")
    time.sleep(3)
    moved = canvas.screenshot(path=str(SCREENSHOTS / f"{week}-2-slider-moved.png"))
    assert moved != before, "moving the learning-rate slider did not change the plot"

    # Play rewinds to step 0 and replays; some frame during the replay must differ.
    explorer.locator(".widget-play button").first.click()
    frames = []
    for i in range(8):
        time.sleep(0.4)
        frames.append(canvas.screenshot(path=str(SCREENSHOTS / f"{week}-3-playing-{i}.png")))
    assert any(frame != moved for frame in frames), "pressing Play did not animate the plot"
    page.screenshot(path=str(SCREENSHOTS / f"{week}-page.png"))
    assert "Error displaying widget" not in page.inner_text("body")
    page.close()


@pytest.mark.parametrize("week", NS_WEEKS)
def test_newton_schulz_widget_moves_in_the_browser(lab: str, browser, week: str) -> None:
    page = _run_all(lab, browser, week)
    widget = page.locator(".widget-vbox:has(.widget-dropdown):has(.widget-slider)").first
    widget.scroll_into_view_if_needed()
    canvas = widget.locator(".jupyter-matplotlib-canvas-div").first
    canvas.wait_for(timeout=30_000)
    time.sleep(1)
    before = canvas.screenshot(path=str(SCREENSHOTS / f"{week}-ns-1-initial.png"))

    # The first slider is the number of steps: from 5 down to 2.
    handle = widget.locator(".widget-slider .noUi-handle").first
    handle.focus()
    for _ in range(3):
        handle.press("ArrowLeft")
    time.sleep(3)
    fewer = canvas.screenshot(path=str(SCREENSHOTS / f"{week}-ns-2-two-steps.png"))
    assert fewer != before, "moving the steps slider did not change the plot"

    # The classic preset sets the three coefficient sliders and redraws.
    widget.locator(".widget-dropdown select").first.select_option(index=1)
    time.sleep(3)
    classic = canvas.screenshot(path=str(SCREENSHOTS / f"{week}-ns-3-classic.png"))
    assert classic != fewer, "choosing the classic preset did not change the plot"
    readouts = widget.locator(".widget-readout").all_inner_texts()
    assert any(r.strip().startswith("1.5") for r in readouts), readouts
    page.screenshot(path=str(SCREENSHOTS / f"{week}-ns-page.png"))
    assert "Error displaying widget" not in page.inner_text("body")
    page.close()
