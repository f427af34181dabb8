"""The detection asset learns public holidays from the entity register: a store that is closed
on its country's holidays is expected closed there, and the same store with no country in the
register is flagged on Christmas, its why naming the calendar's event of that day. Real ingest
and detection materializations on DuckDB."""

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest

from anomaly_assets.definitions import python_assets, resources, sql_assets
from anomaly_assets.defs.alerts import alert_rulebook
from anomaly_assets.settings import load_settings

DAYS = pd.date_range("2024-01-01", "2025-12-25", freq="D", tz="UTC")
CHRISTMAS = "2025-12-25"
DETECTION = [dg.AssetKey(k) for k in (["features", "decomposition"], ["ml", "model_versions"],
                                        ["scoring", "anomaly_scores"], ["scoring", "explanations"])]


def _fleet(root, with_country: bool):
    import holidays

    us = {pd.Timestamp(d).date() for d in holidays.country_holidays("US", years=[2024, 2025])}
    rng = np.random.default_rng(5)
    rows = []
    for e in ("STORE-1", "STORE-2"):
        value = 100.0 + 8.0 * (DAYS.dayofweek >= 5) + rng.normal(0, 2.0, len(DAYS))
        closed = np.array([d.date() in us for d in DAYS])
        value[closed] = 20.0 + rng.normal(0, 1.0, closed.sum())
        rows.append(pd.DataFrame({"entity_id": e, "timestamp": DAYS.strftime("%Y-%m-%dT00:00:00Z"),
                                  "metric": "revenue_usd", "value": value.round(2)}))
    (root / "landing").mkdir()
    pd.concat(rows).to_csv(root / "landing" / "sales.csv", index=False)
    reg = pd.DataFrame({"entity_id": ["STORE-1", "STORE-2"], "site": ["s1", "s2"], "tags": ["", ""]})
    if with_country:
        reg["country"] = "US"
    reg.to_csv(root / "entities.csv", index=False)
    # a promotion the detector does not model: a flag that day must say it fell on it
    pd.DataFrame({"start": [CHRISTMAS], "end": [CHRISTMAS], "kind": ["promotion"], "scope": ["entity:STORE-2"],
                  "name": ["Holiday sale"], "lift": ["1.0"]}).to_csv(root / "calendar.csv", index=False)
    env = {"ANOMALY_LANDING_DIR": str(root / "landing"), "ANOMALY_WAREHOUSE": str(root / "wh.duckdb"),
           "ANOMALY_ENTITIES": str(root / "entities.csv"), "ANOMALY_CALENDAR": str(root / "calendar.csv")}
    res = {**resources(load_settings(env)), "alert_rules": alert_rulebook(environ=env)}
    inst = dg.DagsterInstance.ephemeral()
    first = dg.materialize([*python_assets, *sql_assets], resources=res, instance=inst,
                           selection=[dg.AssetKey(["raw", "observations"])],
                           tags={"dagster/asset_partition_range_start": str(DAYS[0].date()),
                                 "dagster/asset_partition_range_end": CHRISTMAS})
    assert first.success
    night = dg.materialize([*python_assets, *sql_assets], resources=res, instance=inst, selection=DETECTION,
                           partition_key=CHRISTMAS)
    assert night.success
    with duckdb.connect(str(root / "wh.duckdb"), read_only=True) as con:
        scores = con.execute("SELECT entity_id, severity, is_anomaly, why FROM scoring.anomaly_scores "
                             "ORDER BY entity_id").df()
        dec = con.execute("SELECT entity_id, value, expected, lower, upper FROM features.decomposition").df()
    return scores, dec


@pytest.mark.parametrize("with_country", [True, False])
def test_holidays_from_the_register_reach_the_detector(tmp_path, with_country):
    scores, dec = _fleet(tmp_path, with_country)
    assert len(scores) == 2 and len(dec) == 2
    if with_country:
        # expected near the closed-day level, and the closed day inside its band
        assert (dec["expected"] < 40).all(), dec
        assert (~scores["is_anomaly"]).all(), scores
    else:
        assert (dec["expected"] > 80).all(), dec
        assert scores["is_anomaly"].all(), scores
        # only STORE-2's calendar has the sale; the why names it, and no event for STORE-1
        assert scores["why"].str.endswith("; on a known event: Holiday sale (promotion)").tolist() == [False, True]
