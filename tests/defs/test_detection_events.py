"""The detection asset learns the promotions of ``calendar.csv``: a store whose sales double in
each of its promotions is expected doubled on the next one, and not flagged; the same store with
no promotion in the calendar is expected as on any day. Real ingest and detection
materializations on DuckDB."""

import dagster as dg
import duckdb
import numpy as np
import pandas as pd

from anomaly_assets.definitions import python_assets, resources, sql_assets
from anomaly_assets.defs.alerts import alert_rulebook
from anomaly_assets.settings import load_settings

DAYS = pd.date_range("2025-01-01", "2025-10-31", freq="D", tz="UTC")
PROMO_STARTS = pd.date_range("2025-01-20", "2025-10-31", freq="35D", tz="UTC")
DAY = str((PROMO_STARTS[-1] + pd.Timedelta(days=2)).date())  # inside the last promotion
DETECTION = [dg.AssetKey(k) for k in (["features", "decomposition"], ["ml", "model_versions"],
                                        ["scoring", "anomaly_scores"], ["scoring", "explanations"])]


def test_promotions_in_the_calendar_reach_the_detector(tmp_path):
    promo = np.zeros(len(DAYS), bool)
    for a in PROMO_STARTS:
        promo[(DAYS >= a) & (DAYS < a + pd.Timedelta(days=5))] = True
    rng = np.random.default_rng(11)
    rows = []
    for e in ("STORE-1", "STORE-2"):
        value = rng.poisson(60 * (1 + 0.2 * (DAYS.dayofweek >= 5)) * np.where(promo, 2.0, 1.0)).astype(float)
        rows.append(pd.DataFrame({"entity_id": e, "timestamp": DAYS.strftime("%Y-%m-%dT00:00:00Z"),
                                  "metric": "units_sold", "value": value}))
    (tmp_path / "landing").mkdir()
    pd.concat(rows).to_csv(tmp_path / "landing" / "sales.csv", index=False)
    pd.DataFrame({"entity_id": ["STORE-1", "STORE-2"], "site": ["s1", "s2"], "tags": ["", ""]}).to_csv(
        tmp_path / "entities.csv", index=False)
    # only STORE-2's promotions are in the calendar
    pd.DataFrame({"start": PROMO_STARTS.strftime("%Y-%m-%d"),
                  "end": (PROMO_STARTS + pd.Timedelta(days=4)).strftime("%Y-%m-%d"),
                  "kind": "promotion", "scope": "entity:STORE-2", "name": "price promotion"}).to_csv(
        tmp_path / "calendar.csv", index=False)
    env = {"ANOMALY_LANDING_DIR": str(tmp_path / "landing"), "ANOMALY_WAREHOUSE": str(tmp_path / "wh.duckdb"),
           "ANOMALY_ENTITIES": str(tmp_path / "entities.csv"), "ANOMALY_CALENDAR": str(tmp_path / "calendar.csv")}
    res = {**resources(load_settings(env)), "alert_rules": alert_rulebook(environ=env)}
    inst = dg.DagsterInstance.ephemeral()
    assert dg.materialize([*python_assets, *sql_assets], resources=res, instance=inst,
                          selection=[dg.AssetKey(["raw", "observations"])],
                          tags={"dagster/asset_partition_range_start": str(DAYS[0].date()),
                                "dagster/asset_partition_range_end": DAY}).success
    assert dg.materialize([*python_assets, *sql_assets], resources=res, instance=inst, selection=DETECTION,
                          partition_key=DAY).success
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        dec = con.execute("SELECT entity_id, value, expected, lower, upper FROM features.decomposition "
                          "ORDER BY entity_id").df().set_index("entity_id")
        scores = con.execute("SELECT entity_id, is_anomaly FROM scoring.anomaly_scores").df().set_index("entity_id")
    assert len(dec) == 2
    # the calendar's store expects the lift (its value is about 120 units) and keeps it in its band
    assert 1.6 < dec.loc["STORE-2", "expected"] / dec.loc["STORE-1", "expected"] < 2.6, dec
    assert dec.loc["STORE-2", "lower"] <= dec.loc["STORE-2", "value"] <= dec.loc["STORE-2", "upper"], dec
    assert not scores.loc["STORE-2", "is_anomaly"]
