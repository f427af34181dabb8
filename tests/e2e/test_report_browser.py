"""The daily report opened in a real browser: every plot loads and has a size, and the numbers on
the page are the warehouse's."""

import time

import dagster as dg
import duckdb
import pandas as pd
import pytest

from anomaly_assets.definitions import python_assets, resources, sql_assets
from anomaly_assets.demo.fleet import generate_fleet
from anomaly_assets.settings import load_settings
from tests.e2e.browser import chromium, screenshot_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    generate_fleet(root / "landing", entities=12, days=18, labels_path=root / "labels.csv",
                   entities_path=root / "entities.csv")
    env = {"ANOMALY_LANDING_DIR": str(root / "landing"), "ANOMALY_WAREHOUSE": str(root / "wh.duckdb"),
           "ANOMALY_LABELS": str(root / "labels.csv")}
    # an 18-day fleet is past the detector's probation (21 days by default) only with a shorter one,
    # and a lower bar for a flag gives its last day something to show
    result = dg.materialize([*python_assets, *sql_assets], resources=resources(load_settings(env)),
                            instance=dg.DagsterInstance.ephemeral(),
                            run_config={"ops": {"detection": {"config": {"probation_days": 3.0, "warning_p": 0.01}}}},
                            tags={"dagster/asset_partition_range_start": "2026-09-07",
                                  "dagster/asset_partition_range_end": "2026-09-24"})
    assert result.success
    [md] = [m.materialization.metadata for m in result.get_asset_materialization_events()
            if m.asset_key == dg.AssetKey(["reports", "daily"])]
    return root, md


def test_the_report_renders_its_plots_and_the_warehouse_numbers(report, tmp_path):
    root, md = report
    path = root / "reports" / f"daily-{md['day'].value}.html"
    assert md["path"].value == str(path) and (root / "reports" / "latest.html").read_bytes() == path.read_bytes()
    assert len(list((root / "reports" / md["day"].value).glob("*.png"))) == md["plots"].value  # kept as files too
    day = pd.Timestamp(md["day"].value, tz="UTC")
    con = duckdb.connect(str(root / "wh.duckdb"), read_only=True)
    try:
        want = dict(zip(["entities_scored", "points_scored", "flagged_points", "critical_points"], con.execute(
            "SELECT count(DISTINCT entity_id), count(*), count_if(is_anomaly), count_if(severity = 'critical') "
            "FROM scoring.anomaly_scores WHERE ts >= ? AND ts < ? AND severity <> 'cold_start'",
            [day, day + pd.Timedelta(days=1)]).fetchone()))
        top_now = con.execute("SELECT entity_id FROM marts.current_health ORDER BY rank_now LIMIT 1").fetchone()[0]
        evaluation = con.execute("SELECT best_f1 FROM evaluation.metrics WHERE entity_id = '*'").fetchone()[0]
    finally:
        con.close()
    assert want["points_scored"] == 12 * 24 and want["flagged_points"] > 0  # the day has something to show
    t0 = time.monotonic()
    with chromium(1100, 1400) as page:
        page.goto(path.resolve().as_uri())
        page.wait_for_load_state("load")
        images = page.evaluate("[...document.images].map(i => ({alt: i.alt, ok: i.complete, w: i.naturalWidth, "
                               "h: i.naturalHeight, shown: i.getBoundingClientRect().width}))")
        numbers = page.evaluate("Object.fromEntries([...document.querySelectorAll('[data-metric]')]"
                                ".map(e => [e.dataset.metric, Number(e.dataset.value)]))")
        shown = {k: page.locator(f"[data-metric={k}]").inner_text() for k in want}
        cards = page.locator("[data-testid=alert], [data-testid=entity]")
        n_cards = cards.count()
        card_images = [cards.nth(i).locator("img").count() for i in range(n_cards)]
        ranking_first = page.locator("[data-testid=ranking] tr").nth(1).locator("td").nth(1).inner_text()
        evaluation_text = page.locator("[data-testid=evaluation]").inner_text()
        page.screenshot(path=str(screenshot_dir(tmp_path) / "report.png"))
    took = time.monotonic() - t0
    # every plot loaded, decoded and laid out at a real size
    assert len(images) == md["plots"].value + 1 >= 2  # + the fleet health plot
    assert all(i["ok"] and i["w"] >= 400 and i["h"] >= 200 and i["shown"] > 300 for i in images), images
    assert n_cards == md["plots"].value and card_images == [1] * n_cards
    # the numbers are the warehouse's
    for k, v in want.items():
        assert numbers[k] == v and shown[k] == f"{v:,}"
    assert numbers["flagged_share"] == pytest.approx(want["flagged_points"] / want["points_scored"], abs=1e-12)
    assert ranking_first == top_now
    assert f"{evaluation:.4g}" in evaluation_text
    print(f"report checked in Chromium in {took:.1f} s")
