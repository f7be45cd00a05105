"""The report in a real browser: headless Chromium loads the file, decodes every embedded plot
(the page's own script counts images with a natural width into ``<body data-loaded>``), and a
screenshot shows the plots' colours. Skipped when Chromium is not installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from kfloop.report.page import write_report
from tests.report.conftest import Page

CHROMIUM = next(
    (
        path
        for path in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
        if path and Path(path).is_file()
    ),
    None,
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
ORANGE, BLUE = (255, 127, 14), (31, 119, 180)  # matplotlib's first two colours: the traffic plot's bars

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"),
    pytest.mark.processes,  # headless Chromium
]


def chromium(tmp_path: Path, *args: str) -> str:
    result = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.fixture(scope="module")
def report(loop_store, tmp_path_factory) -> Path:
    return write_report(loop_store, "churn", tmp_path_factory.mktemp("browser") / "report.html")


def test_every_plot_is_decoded_by_the_browser(report, tmp_path):
    expected = len(Page(report.read_text()).images)
    dom = Page(chromium(tmp_path, "--dump-dom", report.as_uri()))
    body = next(attrs for tag, attrs in dom.tags if tag == "body")
    assert expected >= 3 and body.get("data-loaded") == str(expected)
    assert {img["id"] for img in dom.images} >= {"plot-drift", "plot-timeline", "plot-traffic"}


def test_screenshot_shows_the_plots(report, tmp_path):
    shot = tmp_path / "shot.png"
    chromium(tmp_path, "--window-size=1200,5000", f"--screenshot={shot}", report.as_uri())
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 5000)
    colours = dict((rgb, n) for n, rgb in image.getcolors(maxcolors=1_000_000))
    assert len(colours) > 200, "the screenshot is nearly blank"
    assert colours.get(ORANGE, 0) > 5000 and colours.get(BLUE, 0) > 1000  # the traffic split's bars
