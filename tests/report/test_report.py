"""The monitoring report on a realistic store: sections, tables, embedded PNG plots, escaping of
hostile text, an empty store, several models, and ``kfloop report`` on the command line."""

from __future__ import annotations

import base64
import datetime as dt
import io
import re

import numpy as np
import pytest
from PIL import Image

from kfloop.cli.main import main
from kfloop.errors import ModelNotFound
from kfloop.monitoring.window_log import read_windows
from kfloop.names import DRIFT_DETECTED, FEEDBACK, QUALITY_DEGRADED, ROLLOUT_DECISION
from kfloop.report.data import (
    ModelFacts,
    canary,
    drift_windows,
    feature_distributions,
    moved_features,
    parse_time,
    traffic,
    version_status,
)
from kfloop.report.page import build_report, write_report
from kfloop.store.objects import LocalStore
from kfloop.store.registry import Registry
from tests.fakes.bundles import make_bundle
from tests.report.conftest import (
    CANARY_EVERY,
    CANARY_FROM,
    REQUESTS,
    Page,
    at,
    drift_data,
    record,
    traffic_rows,
    write_captures,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SECTIONS = [
    "Status",
    "Summary",
    "Feature drift",
    "Monitoring signals",
    "Timeline",
    "Live quality",
    "Traffic split",
    "Canary decisions",
    "Registry lineage",
]


@pytest.fixture(scope="module")
def text(loop_store) -> str:
    return build_report(loop_store, "churn")


@pytest.fixture(scope="module")
def page(text) -> Page:
    return Page(text)


def png_of(img: dict) -> bytes:
    prefix = "data:image/png;base64,"
    assert img["src"].startswith(prefix), img["src"][:40]
    return base64.b64decode(img["src"][len(prefix) :], validate=True)


def test_sections_in_order_with_the_summary_of_the_loop(page):
    assert page.headings[:2] == ["kfloop monitoring report", "Model churn"]
    assert page.headings[2:] == SECTIONS
    summary = dict(page.tables["summary-table"])
    canary_requests = len([i for i in range(CANARY_FROM, REQUESTS) if i % CANARY_EVERY == 0])
    assert summary["current production"] == "v1" and summary["canary"] == "v2"
    assert summary["versions"] == "v1 (production), v2 (staging)"
    assert summary["requests"] == str(REQUESTS)
    assert summary["drift events"] == "4" and summary["retraining runs started"] == "1"  # v1's windows 6-9
    assert summary["rollout decisions"] == "2"
    assert dict(page.tables["traffic-table"][1:]) == {
        "canary v2": str(canary_requests),
        "stable v1": str(REQUESTS - canary_requests),
    }


def test_drift_table_lists_every_checked_window_clean_or_drifted_folded(loop_store, page, text):
    header, *rows = page.tables["drift-table"]
    assert header[:3] == ["time", "version", "window"]
    summaries = read_windows(loop_store, "churn")
    assert len(rows) == len(summaries) == 10 + 3  # v1's ten windows of 60 rows, v2's three of 24
    assert [(r[1], r[2]) for r in rows if r[1] == "v1"] == [("v1", str(k)) for k in range(10)]
    assert [r[4] for r in rows if r[1] == "v1"] == ["no"] * 6 + ["yes"] * 4  # tenure moves in hour 2
    assert {r[4] for r in rows if r[1] == "v2"} == {"no"}  # v2's reference is the new traffic
    assert all(r[-1].startswith("tenure (") for r in rows if r[4] == "yes")
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)
    assert "drift-only-drifted" not in page.ids
    assert "13 windows checked, 4 drifted." in text
    assert "<details id='fold-drift' data-box><summary>13 windows (click to show)</summary>" in text


def test_canary_decisions_and_lineage_tables(page):
    header, *rows = page.tables["canary-table"]
    assert header == ["time", "canary", "stable", "step", "percent", "metrics compared", "verdict", "reason"]
    assert [(r[1], r[2], r[3], r[4], r[6]) for r in rows] == [
        ("v2", "v1", "1", "10%", "continue"),
        ("v2", "v1", "2", "20%", "continue"),
    ]
    assert "error_rate: canary 0.012 vs stable 0.01, threshold 0.05 ok" in rows[0][5]
    header, *rows = page.tables["lineage-table"]
    assert [r[:2] for r in rows] == [["v1", "production"], ["v2", "staging"]]
    v1, v2 = rows
    assert v2[3] == "v1" and v2[4] == "kfloop-churn-retrain-1" and v1[3] == "-"
    assert v2[5] == "s3://kfloop/data/churn-2024-05.parquet (sha256 " + "b2" * 6 + "…)"
    assert (v1[6], v2[6]) == ("auc=0.8800", "auc=0.9100")
    assert "production (deployed to local)" in v1[7] and "staging (registered)" in v1[7]


def test_feedback_posts_are_counted_in_the_events_table_not_listed(page, text):
    header, *rows = page.tables["events-table"]
    feedback = [row for row in rows if row[1] == FEEDBACK]
    assert [row[3].split(", until=")[0] for row in feedback] == ["posts=6, labels=18", "posts=2, labels=12"]
    assert [row[0][-8:] for row in feedback] == [at(74)[11:19], at(100)[11:19]]  # dated at the first post
    assert len([row for row in rows if row[1] == DRIFT_DETECTED]) == 4  # other events stay one row each
    assert re.search(r"<details id='fold-events' data-box><summary>\d+ events \(click to show\)</summary>", text)


def test_every_plot_is_an_embedded_png_with_id_and_alt(page):
    assert {img["id"] for img in page.images} == {
        "plot-drift",
        "plot-dist-1-tenure",
        "plot-signals",
        "plot-timeline",
        "plot-quality",
        "plot-traffic",
    }
    for img in page.images:
        data = png_of(img)
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000, img["id"]
        image = Image.open(io.BytesIO(data))
        assert image.width > (400 if img["id"].startswith("plot-dist-") else 500) and image.height > 150
        assert len(image.convert("RGB").getcolors(maxcolors=100_000) or []) > 20, f"{img['id']} looks blank"
        assert img["alt"].strip()


def test_status_at_the_top_per_version_with_the_last_decision(page):
    first = next(i for i, (tag, _) in enumerate(page.tags) if tag == "table")
    assert page.tags[first][1]["id"] == "status-table"  # the first table of the page
    header, *rows = page.tables["status-table"]
    assert header == [
        "version",
        "stage",
        "status",
        "windows drifted",
        "last window",
        "signals alerting",
        "last decision",
    ]
    assert [r[:4] for r in rows] == [
        ["v2", "staging", "healthy", "0 of 3"],
        ["v1", "production", "drifting", "4 of 10"],
    ]
    assert rows[1][4].endswith("(drifted)") and rows[0][4].endswith("(clean)")
    assert rows[1][6].endswith("production: deployed to local")
    assert rows[0][6].endswith("canary continue at 20%: canary within limits") or "staging" in rows[0][6]


def test_status_degraded_drifting_healthy_and_not_checked():
    def window(version, is_drift, minute):
        when = parse_time(at(minute))
        return {"time": when, "start": when, "version": version, "window_index": minute, "window_size": 10} | {
            "is_drift": is_drift,
            "threshold": 0.05,
            "p_values": {"age": 0.001 if is_drift else 0.5},
        }

    windows = [window("1", True, 1), window("1", False, 2), window("2", False, 3), window("3", True, 4)]
    windows += [window("3", False, 5), window("3", True, 6), window("3", False, 7)]  # half of v3's last drifted
    degraded = {"type": QUALITY_DEGRADED, "time": at(8), "data": {"model_version": "1", "metric": "accuracy"}}
    facts = ModelFacts("churn", [], [], [degraded])
    status = {r["version"]: r for r in version_status(facts, windows)}
    assert {v: r["status"] for v, r in status.items()} == {"1": "degraded", "2": "healthy", "3": "drifting"}
    assert (status["3"]["windows"], status["3"]["drifted"]) == (4, 2)
    assert version_status(ModelFacts("churn", [], [], []), []) == []
    moved = moved_features(windows)
    assert [(m["version"], m["feature"], m["windows"]) for m in moved] == [("3", "age", 2)]  # v1's was alone
    assert [(m["version"], m["windows"]) for m in moved_features(windows, min_windows=1)] == [("3", 2), ("1", 1)]
    assert [m["version"] for m in moved_features(windows[:2])] == ["1"]  # none moved twice: the lone ones
    assert moved[0]["start"] == parse_time(at(4)) and moved[0]["end"] == parse_time(at(6))


def test_reference_and_served_values_of_the_feature_that_moved(loop_store):
    from kfloop.report.data import gather

    facts = gather(loop_store, "churn")
    moved = moved_features(drift_windows(facts))
    assert [(m["version"], m["feature"]) for m in moved] == [("1", "tenure")]
    [dist] = feature_distributions(loop_store, facts, moved)
    assert dist["kind"] == "numeric" and len(dist["reference"]) == 2000
    assert 0 <= min(dist["reference"]) and max(dist["reference"]) <= 34  # v1's reference
    assert min(dist["live"]) >= 20 and max(dist["live"]) > 34  # what v1 served in its drifted windows
    assert len(dist["live"]) >= 4 * 60


def test_the_page_needs_nothing_from_outside(page, text):
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:|//|file:)", text)
    assert "<link" not in text and "url(" not in text and "@import" not in text
    assert [tag for tag, attrs in page.tags if tag == "script" and attrs.get("src")] == []


def test_live_quality_per_version_from_labels(page):
    header, *rows = page.tables["quality-table"]
    assert header[-1] == "accuracy"
    v1 = [float(r[-1]) for r in rows if r[0] == "v1"]
    assert len(v1) >= 4 and v1[0] > 0.85 and v1[-1] < 0.7  # v1 degrades as labels drift away from it
    assert [float(r[-1]) for r in rows if r[0] == "v2"] == [pytest.approx(0.9, abs=0.02)]


def test_without_labels_the_quality_section_says_so_and_shows_the_cbpe_estimate(tmp_path):
    store = LocalStore(tmp_path / "home")
    Registry(store).register("churn", make_bundle(tmp_path / "b", 0.9))
    write_captures(store, "churn", traffic_rows()[:300])
    page = Page(build_report(store, "churn"))
    assert "No labels yet." in page.text and "quality-table" not in page.tables
    assert "plot-quality" in {img["id"] for img in page.images}  # the label-free estimate alone


def test_hostile_text_is_escaped(tmp_path):
    store = LocalStore(tmp_path / "home")
    attack = "<script>alert(1)</script>"
    Registry(store).register(
        "evil",
        make_bundle(tmp_path / "b", 0.9),
        lineage={
            "data_uri": f"s3://x/{attack}.csv",
            "data_sha256": "ff" * 32,
            "pipeline_run_name": "<img src=x onerror=alert(2)>",
        },
    )
    write_captures(store, "evil", [(at(1), attack, "<b>canary</b>"), (at(2), "1", "stable")])
    record(
        store,
        "evil",
        DRIFT_DETECTED,
        "/x",
        {
            **drift_data(0, 0.001, 0.5, version=attack),
            "data": {"is_drift": 1, "threshold": 0.025, "p_val_by_feature": {"<i>f</i>": 0.001}},
        },
        3,
    )
    record(
        store,
        "evil",
        ROLLOUT_DECISION,
        "/x",
        {"canary_version": attack, "verdict": "</td></table>", "metrics": {"<u>m</u>": {"canary": attack}}},
        4,
    )
    text = build_report(store, "evil")
    page = Page(text)
    assert len(page.scripts) == 1 and "alert" not in page.scripts[0]  # only the page's own script
    assert not [tag for tag, attrs in page.tags if tag in ("b", "i", "u") or "onerror" in attrs]
    assert f"s3://x/{attack}.csv (sha256 ffffffffffff…)" in [row[5] for row in page.tables["lineage-table"]]
    assert page.tables["lineage-table"][1][4] == "<img src=x onerror=alert(2)>"
    assert dict(page.tables["traffic-table"][1:])[f"<b>canary</b> v{attack}"] == "1"
    assert page.tables["canary-table"][1][1] == f"v{attack}" and page.tables["canary-table"][1][6] == "</td></table>"
    assert page.tables["drift-table"][1][1] == f"v{attack}" and page.tables["drift-table"][1][-1] == "<i>f</i> (0.001)"


def test_empty_store_gives_a_short_valid_page(tmp_path):
    page = Page(build_report(LocalStore(tmp_path / "empty"), None))
    assert page.headings == ["kfloop monitoring report"]
    assert "nothing-recorded" in page.ids and page.images == [] and page.tables == {}
    assert "Nothing was recorded" in "".join(page.text)


def test_a_named_model_with_nothing_recorded_is_an_error(loop_store, tmp_path):
    with pytest.raises(ModelNotFound, match=r"nothing recorded for model 'nope'.*known models: churn"):
        build_report(loop_store, "nope")
    assert not (tmp_path / "r.html").exists()


def test_all_models_get_their_own_sections_with_unique_ids(tmp_path):
    store = LocalStore(tmp_path / "home")
    write_captures(store, "alpha", traffic_rows()[:50])
    record(store, "beta", DRIFT_DETECTED, "/x", drift_data(0, 0.2, 0.001), 5)
    record(store, "beta", DRIFT_DETECTED, "/x", drift_data(1, 0.3, 0.4, is_drift=0), 6)
    page = Page(write_report(store, None, tmp_path / "out" / "r.html").read_text())
    assert [h for h in page.headings if h.startswith("Model")] == ["Model alpha", "Model beta"]
    assert len(page.ids) == len(set(page.ids))
    assert {img["id"] for img in page.images} == {"plot-traffic-alpha", "plot-drift-beta", "plot-timeline-beta"}
    assert "drift-only-drifted" not in page.ids  # beta's log has a window without drift too


def test_canary_ends_with_a_final_rollout_decision():
    captures = [{"time": at(1), "model_version": "2", "revision": "canary"}]
    decision = {"type": ROLLOUT_DECISION, "time": at(2), "data": {"canary_version": 2, "verdict": "promote"}}
    assert canary(ModelFacts("m", [], captures, [])) == "2"
    assert canary(ModelFacts("m", [], captures, [{**decision, "data": {"verdict": "continue"}}])) == "2"
    assert canary(ModelFacts("m", [], captures, [decision])) is None


def test_traffic_buckets_count_every_request():
    rows = traffic_rows()
    captures = [{"time": when, "model_version": version, "revision": revision} for when, version, revision in rows]
    split = traffic(ModelFacts("m", [], captures, []))
    assert split["bucket"] == "5 min" and split["width_s"] == 300
    assert sum(map(sum, split["series"].values())) == len(rows)
    assert split["series"]["canary v2"][0] == 0 and split["series"]["canary v2"][-2] > 0
    assert all((b - a).total_seconds() == 300 for a, b in zip(split["starts"], split["starts"][1:]))
    assert split["starts"][0] <= parse_time(rows[0][0]) < split["starts"][1]


def test_cli_writes_the_report_and_prints_its_path(loop_store, tmp_path, capsys):
    home = str(loop_store.root)
    out = tmp_path / "sub" / "report.html"
    assert main(["--home", home, "report", "--model", "churn", "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)
    assert Page(out.read_text()).headings[1] == "Model churn"
    missing = tmp_path / "missing.html"
    assert main(["--home", home, "report", "--model", "nope", "-o", str(missing)]) == 1
    assert "nothing recorded for model 'nope'" in capsys.readouterr().err and not missing.exists()


def test_a_minute_of_windows_spreads_over_the_drift_charts_width():
    """The demo's case: a minute of windows once sat in one blob on a ten-minute axis."""
    from kfloop.report import plots

    start = parse_time(at(0))
    windows = [
        {
            "time": start + dt.timedelta(seconds=5 * k),
            "start": None,
            "version": "1",
            "window_index": k,
            "window_size": 200,
            "is_drift": k >= 6,
            "threshold": 0.006,
            "p_values": {"age": 1e-20 if k >= 6 else 0.4, "plan": 0.5},
        }
        for k in range(12)
    ]
    image = np.asarray(
        Image.open(io.BytesIO(base64.b64decode(plots.drift_plot(windows, [("1", "age")])))).convert("RGB")
    )
    left, right = (int(plots.MARGINS[k] * image.shape[1]) for k in ("left", "right"))
    axes = image[:, left:right]  # the plotting area: not the legend's markers on the right
    found = []
    for colour in (plots.CLEAN, plots.DRIFTED):
        target = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.uint8)
        found.append(np.flatnonzero((axes == target).all(axis=2).any(axis=0)))
    every = np.concatenate(found)
    assert (every.max() - every.min()) / axes.shape[1] > 0.85  # 3% margins on either side
    assert found[0].max() < found[1].min()  # clean windows first, then the drifted ones


@pytest.mark.parametrize("seconds", [3, 200, 7200])
def test_time_axes_of_any_span_draw_without_warnings(seconds):
    import warnings

    from kfloop.report import plots

    start = parse_time(at(0))
    points = [(start + dt.timedelta(seconds=seconds * k / 4), "io.kfloop.drift.detected") for k in range(5)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns when it cannot place the date ticks
        assert plots.timeline_plot(points)
