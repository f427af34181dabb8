"""Asset checks for real: the chain with its GX checks on a temp warehouse, then the warehouse
tampered with (a copy per case) and the checks run again."""

import shutil

import dagster as dg
import duckdb
import pandas as pd
import pytest

from anomaly_assets import definitions
from anomaly_assets.config import ConfigFileError
from anomaly_assets.definitions import python_assets, resources, sql_assets
from anomaly_assets.defs.checks import CHECKS
from anomaly_assets.demo.fleet import generate_fleet
from anomaly_assets.expectations import load_expectations
from anomaly_assets.settings import load_settings

FIRST, LAST = "2026-09-07", "2026-09-21"  # 15 days: a week of cold start, then fitted and scored days
OBS = dg.AssetKey(["raw", "observations"])
DEC = dg.AssetKey(["features", "decomposition"])
SCORES = dg.AssetKey(["scoring", "anomaly_scores"])
BLOCKING = {(OBS, "schema"), (OBS, "keys_present"), (OBS, "no_duplicates"), (OBS, "no_rejected_files"),
            (DEC, "finite_past_cold_start"), (SCORES, "score_in_unit_interval")}


def _env(root, **extra):
    return {"ANOMALY_LANDING_DIR": str(root / "landing"), "ANOMALY_WAREHOUSE": str(root / "wh.duckdb"), **extra}


def _run(res, start, end=None, selection=None):
    tags = ({"dagster/partition": start} if end is None else
            {"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end})
    return dg.materialize([*python_assets, *sql_assets, *CHECKS], resources=res, selection=selection,
                          instance=dg.DagsterInstance.ephemeral(), tags=tags, raise_on_error=False)


def _evaluations(result) -> dict:
    return {(e.asset_key, e.check_name): e for e in result.get_asset_check_evaluations()}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("checks")
    generate_fleet(root / "landing", entities=6, days=15, labels_path=root / "labels.csv",
                   entities_path=root / "entities.csv")
    result = _run(resources(load_settings(_env(root))), FIRST, LAST)
    assert result.success
    return root, result


def test_the_chain_job_selects_every_check():
    job = definitions.defs.resolve_job_def("anomaly_chain")
    keys = definitions.defs.resolve_asset_graph().asset_check_keys
    assert len(keys) == 12 and BLOCKING <= {(k.asset_key, k.name) for k in keys}
    assert {n.name for n in job.graph.nodes} >= {"observations_checks", "decomposition_checks",
                                                   "anomaly_scores_checks"}


def test_clean_chain_passes_its_checks_with_gx_statistics(chain):
    _, result = chain
    evals = _evaluations(result)
    assert len(evals) == 12
    for key, e in evals.items():
        assert e.metadata["gx_statistics"].value["evaluated_expectations"] >= 1 or key[1] == "residual_z_scale"
        assert e.partition == LAST  # a range run: the range's result recorded on each day, full metadata on the last
        if key != (SCORES, "anomaly_rate"):  # the detector's flag rate is its own business here
            assert e.passed, (key, e.description)
        assert bool(e.blocking) == (key in BLOCKING)
    volume = evals[(OBS, "volume")].description
    assert volume.startswith("8 day(s) within 0.5..2.0") and "7 day(s) without enough history" in volume
    # every row but each series' first min_points (cold start)
    assert evals[(DEC, "finite_past_cold_start")].metadata["fitted_rows"].value == (15 * 24 - 8) * 6 * 4
    assert evals[(SCORES, "score_in_unit_interval")].metadata["scored_points"].value > 0


def test_one_day_records_the_partition_and_says_when_history_is_short(chain):
    root, _ = chain
    result = _run(resources(load_settings(_env(root))), "2026-09-08",
                  selection=dg.AssetSelection.checks_for_assets(OBS))
    evals = _evaluations(result)
    assert result.success and {e.partition for e in evals.values()} == {"2026-09-08"}
    assert evals[(OBS, "volume")].passed
    assert evals[(OBS, "volume")].description.startswith("not enough history: 2026-09-08 had fewer than 7")
    assert result.get_asset_materialization_events() == []  # checks alone read what is there


ONE_ROW = "(SELECT rowid FROM {t} WHERE ts >= '2026-09-19' ORDER BY entity_id, ts, rowid LIMIT 1)"
TAMPER = {
    "inf value": (OBS, "keys_present",
                  f"UPDATE raw.observations SET value = 'inf' WHERE rowid = {ONE_ROW.format(t='raw.observations')}"),
    "duplicate row": (OBS, "no_duplicates",
                      "INSERT INTO raw.observations SELECT * FROM raw.observations WHERE ts >= '2026-09-19' LIMIT 1"),
    "extra column": (OBS, "schema", "ALTER TABLE raw.observations ADD COLUMN note VARCHAR"),
    "voltage 5 kV": (OBS, "value_ranges", "UPDATE raw.observations SET value = 5000 WHERE metric = 'voltage_v' "
                                          "AND ts = '2026-09-19 10:00:00+00'"),
    "half a day lost": (OBS, "volume", "DELETE FROM raw.observations WHERE ts >= '2026-09-19 10:00:00+00' "
                                       "AND ts < '2026-09-20'"),
    "NaN in a fitted series": (DEC, "finite_past_cold_start",
                               f"UPDATE features.decomposition SET residual_z = 'nan' "
                               f"WHERE rowid = {ONE_ROW.format(t='features.decomposition')}"),
    # past cold start yet no expected value: a fitted row that is not finite (and a cold start
    # that history does not explain)
    "unfitted with long history": (DEC, "finite_past_cold_start",
                                   "UPDATE features.decomposition SET expected = NULL, residual = NULL, "
                                   "residual_z = NULL WHERE entity_id = 'pump-0001' AND ts >= '2026-09-19'"),
    "residual scale x100": (DEC, "residual_z_scale", "UPDATE features.decomposition SET residual_z = residual_z * 100"),
    "score 1.5": (SCORES, "score_in_unit_interval",
                  f"UPDATE scoring.anomaly_scores SET anomaly_score = 1.5 "
                  f"WHERE rowid = {ONE_ROW.format(t='scoring.anomaly_scores')}"),
    "NULL score outside cold start": (SCORES, "score_in_unit_interval",
                                      "UPDATE scoring.anomaly_scores SET anomaly_score = NULL "
                                      "WHERE severity = 'normal' AND ts >= '2026-09-20 05:00:00+00' "
                                      "AND ts < '2026-09-20 06:00:00+00'"),
    "flagged but normal": (SCORES, "score_in_unit_interval",
                           "UPDATE scoring.anomaly_scores SET is_anomaly = true WHERE rowid = (SELECT rowid FROM "
                           "scoring.anomaly_scores WHERE severity = 'normal' AND ts >= '2026-09-19' LIMIT 1)"),
    "every point flagged": (SCORES, "anomaly_rate",
                            "UPDATE scoring.anomaly_scores SET severity = 'warning', is_anomaly = true "
                            "WHERE severity <> 'cold_start' AND ts >= '2026-09-19'"),
}


@pytest.mark.parametrize("case", list(TAMPER))
def test_tampered_warehouse_fails_the_right_check(chain, tmp_path, case):
    root, _ = chain
    asset, check, sql = TAMPER[case]
    (tmp_path / "landing").mkdir()
    shutil.copy(root / "wh.duckdb", tmp_path / "wh.duckdb")
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    try:
        con.execute(sql)
    finally:
        con.close()
    result = _run(resources(load_settings(_env(tmp_path))), "2026-09-19", "2026-09-20",
                  selection=dg.AssetSelection.checks_for_assets(asset))
    evals = _evaluations(result)
    # the volume and the flagged share are judged per day: a failed day fails the check
    failed = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
    assert check in failed, {name: e.description for (_, name), e in evals.items()}
    e = evals[(asset, check)]
    assert e.metadata["gx_statistics"].value["unsuccessful_expectations"] >= 1
    if check not in ("schema", "volume", "residual_z_scale", "anomaly_rate"):
        assert "_no rows_" not in e.metadata["failing_examples"].value  # the offending rows are shown
    # a failed blocking check fails the step (and so stops what is downstream); a warning does not
    assert result.success == ((asset, check) not in BLOCKING)


def test_a_failed_blocking_check_stops_the_chain(chain, tmp_path):
    root, _ = chain
    shutil.copytree(root / "landing", tmp_path / "landing")
    shutil.copy(root / "wh.duckdb", tmp_path / "wh.duckdb")
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    try:
        con.execute("ALTER TABLE raw.observations ADD COLUMN note VARCHAR")  # the contract is broken
    finally:
        con.close()
    result = _run(resources(load_settings(_env(tmp_path))), LAST)
    assert not result.success
    materialized = {m.asset_key for m in result.get_asset_materialization_events()}
    assert OBS in materialized and DEC not in materialized and SCORES not in materialized
    schema = _evaluations(result)[(OBS, "schema")]
    assert not schema.passed and "note" in schema.metadata["failing_examples"].value


def test_bad_expectations_file_fails_when_definitions_load(tmp_path):
    bad = tmp_path / "expectations.yaml"
    bad.write_text("scores:\n  anomaly_rate: {min: 0.5, max: 0.1}\n")
    with pytest.raises(ConfigFileError, match=rf"{bad}: field 'scores.anomaly_rate': min 0.5 is above max 0.1"):
        resources(load_settings(_env(tmp_path, ANOMALY_EXPECTATIONS=str(bad))))


def test_a_day_without_any_data_passes_and_says_so(tmp_path):
    (tmp_path / "landing").mkdir()
    partitioned = dg.AssetSelection.assets(OBS, DEC, ["ml", "model_versions"], SCORES, ["scoring", "explanations"])
    result = _run(resources(load_settings(_env(tmp_path))), "2026-03-01",
                  selection=partitioned | dg.AssetSelection.all_asset_checks())
    evals = _evaluations(result)
    assert result.success and len(evals) == 12 and all(e.passed for e in evals.values())
    assert evals[(DEC, "residual_z_scale")].description.startswith("no fitted rows")
    assert evals[(SCORES, "anomaly_rate")].description.startswith("no scored points")


def test_volume_compares_each_day_with_the_median_of_earlier_days_with_rows():
    import pandas as pd

    from anomaly_assets.defs.checks import volume_frame

    day = [pd.Timestamp(f"2026-03-{d:02d}", tz="UTC") for d in range(1, 13)]
    rows = [100, 100, 0, 120, 80, 100, 100, 100, 100, 40, 300, 100]  # 03-03 never loaded
    daily = pd.DataFrame({"day": [d for d, n in zip(day, rows) if n], "rows": [n for n in rows if n]})
    v = volume_frame(daily, day[6:], history=5).set_index("day")
    assert v.loc["2026-03-07", "earlier_days"] == 5 and v.loc["2026-03-07", "trailing_median"] == 100
    assert v.loc["2026-03-10", "ratio"] == 0.4 and v.loc["2026-03-11", "ratio"] == 3.0
    assert pd.isna(volume_frame(daily, day[3:4], history=5)["ratio"]).all()  # 2 earlier days: not enough
    # today, still filling up with micro-batches, is judged once it has ended
    open_today = volume_frame(daily, day[9:], history=5, open_from=day[10]).set_index("day")
    assert open_today.loc["2026-03-10", "ratio"] == 0.4 and open_today.loc[["2026-03-11", "2026-03-12"], "ratio"].isna().all()



# every table tampered at once (one copy, one run per chunk size keeps the test short); the
# checks that still pass (window, volume, residual scale) are compared too
ALL_TAMPERED = [TAMPER[c][2] for c in ("duplicate row", "voltage 5 kV", "NaN in a fitted series",
                                       "flagged but normal")] + [
    # (the NaN is in pump-0001's first row: leave another entity unfitted)
    TAMPER["unfitted with long history"][2].replace("pump-0001", "pump-0004"),
    # one row without an expected value in a fitted series-day: still checked (and failing)
    ("UPDATE features.decomposition SET expected = NULL WHERE entity_id = 'pump-0006' "
     "AND ts = '2026-09-19 05:00:00+00'"),
    # a NULL entity sorts after every entity range: it must still be read (and fail keys_present)
    "ALTER TABLE raw.observations ALTER COLUMN entity_id DROP NOT NULL",
    ("INSERT INTO raw.observations SELECT NULL, metric, ts, value, source_file, ingested_at "
     "FROM raw.observations WHERE ts >= '2026-09-19' LIMIT 2")]


def test_checks_read_in_entity_chunks_report_what_one_read_reports(chain, tmp_path, monkeypatch):
    """The row-wise expectations run a few entities at a time (checks.CHUNK_ROWS) and are combined:
    every check must report the same results, statistics and failing rows as one read of the slice."""
    from anomaly_assets import warehouse as wh
    from anomaly_assets.defs import checks

    root, _ = chain
    (tmp_path / "landing").mkdir()
    shutil.copy(root / "wh.duckdb", tmp_path / "wh.duckdb")
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    try:
        for sql in ALL_TAMPERED:
            con.execute(sql)
        # 1152 rows of 6 entities per table and day pair: about one entity per chunk of 250
        assert len(checks.entity_slices(con, wh.OBSERVATIONS, "2026-09-19", "2026-09-21", 250)) >= 6
    finally:
        con.close()
    res = resources(load_settings(_env(tmp_path)))
    every_check = dg.AssetSelection.checks_for_assets(OBS, DEC, SCORES)

    def run(rows):
        monkeypatch.setattr(checks, "CHUNK_ROWS", rows)
        out = {}
        for key, e in _evaluations(_run(res, "2026-09-19", "2026-09-20", selection=every_check)).items():
            md = {k: v.value for k, v in e.metadata.items() if k != "now"}
            for x in md.get("expectations") or []:  # the in_partition_window bound 'now' is the run's
                x["expectation"] = x["expectation"].split(", max_value=Timestamp('20", 1)[0]
            out[key] = (e.passed, e.description if key[1] != "in_partition_window" else "", md)
        return out

    whole, chunked = run(10**9), run(250)
    assert chunked == whole
    failed = {name for (_, name), (passed, _, _) in whole.items() if not passed} - {"anomaly_rate"}
    assert failed == {"schema", "keys_present", "no_duplicates", "value_ranges", "finite_past_cold_start",
                      "cold_start_only_when_history_is_short", "score_in_unit_interval"}
    null = whole[(OBS, "keys_present")][2]["expectations"][0]
    assert null["expectation"] == "expect_column_values_to_not_be_null(column='entity_id')"
    assert null["unexpected_count"] == 2 and null["element_count"] == 1152 + 1 + 2
    assert "| nan | " in whole[(OBS, "keys_present")][2]["failing_examples"]  # the NULL entity's rows shown
    finite = {x["expectation"]: x for x in whole[(DEC, "finite_past_cold_start")][2]["expectations"]}
    # pump-0006's one timestamp (4 metrics) and pump-0004's two days left without a fit though their
    # history is long: both past cold start
    assert finite["expect_column_values_to_not_be_null(column='expected')"]["unexpected_count"] == 4 + 4 * 48
    assert finite["expect_column_values_to_not_be_null(column='residual_z')"]["unexpected_count"] == 1 + 4 * 48  # + the NaN


def test_a_range_run_records_every_check_and_its_counts_per_day(chain):
    """The UI shows a partitioned check's status per day and plots per-day metadata: a backfill
    must record each day, not one result and one total for the whole range."""
    root, result = chain
    days = [str(d.date()) for d in pd.date_range(FIRST, LAST, freq="D")]
    by_check: dict = {}
    for e in result.get_asset_check_evaluations():
        by_check.setdefault((e.asset_key, e.check_name), []).append(e)
    assert len(by_check) == 12
    for key, evs in by_check.items():
        assert sorted(e.partition for e in evs) == days, key
        assert all("failed_expectations" in e.metadata for e in evs)  # numbers on every day
    con = duckdb.connect(str(root / "wh.duckdb"), read_only=True)
    try:
        share = dict(con.execute(
            "SELECT strftime(ts, '%Y-%m-%d'), count_if(is_anomaly) / count(*) FROM scoring.anomaly_scores "
            "WHERE severity <> 'cold_start' GROUP BY 1").fetchall())
        rows = dict(con.execute("SELECT strftime(ts, '%Y-%m-%d'), count(*) FROM scoring.anomaly_scores GROUP BY 1").fetchall())
    finally:
        con.close()
    band = load_expectations(definitions.settings.expectations).scores.anomaly_rate
    for e in by_check[(SCORES, "anomaly_rate")]:
        if e.partition in share:  # scored days: judged on their own flagged share
            assert e.metadata["flagged_share"].value == pytest.approx(share[e.partition], abs=1e-12)
            assert e.passed == (band.lower <= share[e.partition] <= band.upper)
        else:  # cold start only: nothing to judge
            assert e.passed
    mats = [m for m in result.get_asset_materialization_events()
            if m.asset_key == SCORES]
    per_day = {m.partition: m.materialization.metadata for m in mats}
    assert sorted(per_day) == days
    for day, md in per_day.items():
        assert md["dagster/row_count"].value == rows[day] == 6 * 24
        assert md["rows_in_run"].value == 6 * 24 * len(days)
        if day in share:
            assert md["flagged_share"].value == pytest.approx(share[day], abs=1e-12)
        else:
            assert md["scored"].value == 0 and md["cold_start_points"].value == 6 * 24
