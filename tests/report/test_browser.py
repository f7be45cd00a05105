"""The report in a real browser: headless Chromium loads the file, decodes every embedded plot
(the page's own script counts images with a natural width into ``<body data-loaded>``), lays it out
(the script writes the boxes of the marked elements into ``<body data-layout>``), and screenshots
show the plots' colours, the status within the first screen and the drift chart's points spread
over its width. Skipped when Chromium is not installed."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kfloop.report import plots
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


VIEWPORT = (1200, 900)


def layout(tmp_path: Path, report: Path) -> dict[str, list[int]]:
    """The boxes ``[left, top, width, height]`` (page coordinates) the browser gave the marked elements."""
    dom = Page(chromium(tmp_path, f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}", "--dump-dom", report.as_uri()))
    body = next(attrs for tag, attrs in dom.tags if tag == "body")
    return json.loads(body["data-layout"])


def rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.uint8)


def test_the_status_fits_the_first_screen_and_long_tables_start_folded(report, tmp_path):
    boxes = layout(tmp_path, report)
    left, top, width, height = boxes["status-block"]
    assert top + height <= VIEWPORT[1] and width >= 0.8 * VIEWPORT[0] - 200
    assert boxes["status-table"][3] > 40  # its rows are shown
    assert boxes["fold-drift"][3] < 40 and boxes["fold-events"][3] < 40  # folded: a closed <details> is one line
    assert boxes["drift-table"][3] > 200  # what unfolding shows
    assert "fold-canary" not in boxes and boxes["canary-table"][3] > 40  # two rows: not folded
    shot = tmp_path / "top.png"
    chromium(tmp_path, f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}", f"--screenshot={shot}", report.as_uri())
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    badges = {name: (pixels == rgb(colour)).all(axis=2).sum() for name, colour in BADGES.items()}
    assert badges["healthy"] > 200 and badges["drifting"] > 200, badges  # v2 healthy, v1 drifting, on screen


BADGES = {"healthy": "#1a7f37", "drifting": "#cf222e"}


def test_the_drift_charts_points_spread_over_its_width(report, tmp_path):
    boxes = layout(tmp_path, report)
    left, top, width, height = boxes["plot-drift"]
    assert width >= 900 and height >= 300
    shot = tmp_path / "page.png"
    chromium(tmp_path, f"--window-size={VIEWPORT[0]},{top + height + 100}", f"--screenshot={shot}", report.as_uri())
    page = np.asarray(Image.open(shot).convert("RGB"))
    # the plotting area of the chart (plots.MARGINS), without the legend's markers on its right
    x0, x1 = (left + int(plots.MARGINS[k] * width) for k in ("left", "right"))
    chart, width = page[top : top + height, x0:x1], x1 - x0
    columns = {}
    for name, colour in (("clean", plots.CLEAN), ("drifted", plots.DRIFTED)):
        columns[name] = np.flatnonzero((chart == rgb(colour)).all(axis=2).any(axis=0))
        assert len(columns[name]) >= 10, f"no {name} windows drawn"
    every = np.concatenate(list(columns.values()))
    assert (every.max() - every.min()) / width > 0.85  # the axis fits the windows' time span, not a blob
    assert len(np.unique(every // 8)) >= 10  # 13 windows: many distinct points across the width
    assert np.median(columns["drifted"]) > np.median(columns["clean"])  # the drift came in the second hour
