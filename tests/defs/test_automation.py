"""Automation: freshness on every asset, the nightly schedule, the landing sensor, failure alerts,
and the analysts' copy. Sensors and schedules are evaluated for real (Dagster's own tick
evaluation on real folders and a real instance); webhooks go to a real local HTTP server."""

import datetime as dt
import json
import time
import os
import shutil
import threading
import zoneinfo
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from anomaly_assets import definitions
from anomaly_assets.analyst_copy import publish
from anomaly_assets.defs import automation
from anomaly_assets.defs.resources import LandingFolder
from anomaly_assets.demo.fleet import generate_fleet

FIRST, LAST = "2026-09-07", "2026-09-21"  # 15 days of the demo fleet


def _settings(**env) -> automation.AutomationSettings:
    return automation.load_automation_settings({"ANOMALY_LANDING_SETTLE_SECONDS": "0", **env})


def _repo(schedules=(), sensors=()):
    """The project's assets with the schedule or sensor under test: run requests are validated against it."""
    return dg.Definitions(assets=[*definitions.python_assets, *definitions.sql_assets, definitions.analyst_copy],
                          schedules=list(schedules), sensors=list(sensors),
                          resources=definitions.resources()).get_repository_def()


# ------------------------------------------------------------------------------------ freshness


def _specs(defs: dg.Definitions) -> dict:
    repo = defs.get_repository_def()
    return {spec.key: spec for a in set(repo.assets_defs_by_key.values()) for spec in a.specs}


def test_every_asset_carries_the_default_freshness_policy():
    specs = _specs(definitions.defs)
    assert dg.AssetKey("analyst_copy") in specs and dg.AssetKey(["raw", "observations"]) in specs
    assert set(specs) == set(definitions.defs.get_repository_def().asset_graph.get_all_asset_keys())
    for key, spec in specs.items():
        policy = spec.freshness_policy
        assert isinstance(policy, dg.FreshnessPolicy), key
        assert policy.warn_window.to_timedelta() == dt.timedelta(hours=26), key
        assert policy.fail_window.to_timedelta() == dt.timedelta(hours=36), key


def test_freshness_windows_come_from_the_environment():
    s = _settings(ANOMALY_FRESHNESS_WARN_HOURS="3", ANOMALY_FRESHNESS_FAIL_HOURS="7.5")
    assets = automation.with_freshness([*definitions.python_assets, *definitions.sql_assets], s)
    specs = _specs(dg.Definitions(assets=assets, resources=definitions.resources()))
    assert {(p.freshness_policy.warn_window.to_timedelta(), p.freshness_policy.fail_window.to_timedelta())
            for p in specs.values()} == {(dt.timedelta(hours=3), dt.timedelta(hours=7.5))}


@pytest.mark.parametrize("env, message", [
    ({"ANOMALY_FRESHNESS_WARN_HOURS": "40"}, "ANOMALY_FRESHNESS_WARN_HOURS=40 must be less than ANOMALY_FRESHNESS_FAIL_HOURS=36"),
    ({"ANOMALY_FRESHNESS_FAIL_HOURS": "soon"}, "ANOMALY_FRESHNESS_FAIL_HOURS='soon' is not valid: expected a number"),
    ({"ANOMALY_SCHEDULE_CRON": "at two"}, "ANOMALY_SCHEDULE_CRON='at two' is not a cron string"),
    ({"ANOMALY_SCHEDULE_TZ": "Mars/Olympus"}, "ANOMALY_SCHEDULE_TZ='Mars/Olympus' is not a time zone"),
    ({"ANOMALY_SENSOR_INTERVAL_SECONDS": "0"}, "ANOMALY_SENSOR_INTERVAL_SECONDS='0' is not valid: expected an integer >= 1"),
])
def test_bad_settings_name_the_variable(env, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        automation.load_automation_settings(env)


# ------------------------------------------------------------------------------------ schedule


@pytest.mark.parametrize("tz, local, partition", [
    ("UTC", dt.datetime(2026, 9, 23, 2, 0), "2026-09-22"),
    ("Europe/Berlin", dt.datetime(2026, 9, 23, 2, 0), "2026-09-22"),  # 00:00 UTC: the 22nd just ended
    ("America/Los_Angeles", dt.datetime(2026, 9, 23, 2, 0), "2026-09-22"),  # 09:00 UTC
    ("Asia/Tokyo", dt.datetime(2026, 9, 23, 2, 0), "2026-09-21"),  # 17:00 UTC on the 22nd: not over yet
])
def test_nightly_schedule_runs_the_day_that_just_ended(tz, local, partition):
    s = _settings(ANOMALY_SCHEDULE_TZ=tz, ANOMALY_SCHEDULE_CRON="0 2 * * *")
    schedule = automation.build_nightly_schedule(definitions.anomaly_chain, s)
    assert schedule.cron_schedule == "0 2 * * *" and schedule.execution_timezone == tz
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    when = local.replace(tzinfo=zoneinfo.ZoneInfo(tz))
    data = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=when, repository_def=_repo(schedules=[schedule])))
    [request] = data.run_requests
    assert request.partition_key == partition
    assert request.run_key == f"nightly:{partition}"
    assert request.tags[automation.TRIGGER_TAG] == "nightly"


def test_nightly_schedule_is_the_one_in_definitions_and_targets_the_whole_chain():
    repo = definitions.defs.get_repository_def()
    schedule = repo.get_schedule_def("nightly")
    assert schedule.job_name == "anomaly_chain"
    job_keys = repo.get_job("anomaly_chain").asset_layer.executable_asset_keys
    assert dg.AssetKey(["raw", "observations"]) in job_keys and dg.AssetKey("analyst_copy") in job_keys


# ------------------------------------------------------------------------------------ landing sensor


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """16 days of a 4-pump fleet; the landing folder starts with the first 15."""
    root = tmp_path_factory.mktemp("fleet")
    generate_fleet(root / "all", entities=4, days=16, labels_path=root / "labels.csv", entities_path=root / "entities.csv")
    return root


@pytest.fixture
def landing(fleet, tmp_path):
    folder = tmp_path / "landing"
    shutil.copytree(fleet / "all", folder, ignore=shutil.ignore_patterns("2026-09-22"))
    return folder


def _tick(sensor, folder: Path, cursor=None):
    ctx = dg.build_sensor_context(cursor=cursor, resources={"landing": LandingFolder(path=str(folder))},
                                  repository_def=_repo(sensors=[sensor]))
    return sensor.evaluate_tick(ctx)


def _days(request: dg.RunRequest) -> tuple[str, str]:
    if request.partition_key:
        return request.partition_key, request.partition_key
    return request.tags["dagster/asset_partition_range_start"], request.tags["dagster/asset_partition_range_end"]


def test_landing_sensor_requests_each_file_version_once(landing, fleet):
    sensor = automation.build_landing_sensor(definitions.anomaly_chain, _settings())
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    (landing / "labels.csv").write_text("entity_id,start,end,metrics\n")  # a sidecar: never a run

    first = _tick(sensor, landing)
    [history] = first.run_requests  # the whole history: one run over the range
    assert _days(history) == (FIRST, LAST)
    assert history.tags[automation.TRIGGER_TAG] == "landing"
    assert history.tags["anomaly/files"] == str(len(list(landing.rglob("site-*.csv"))))
    assert set(json.loads(first.cursor)["files"]) == {p.relative_to(landing).as_posix() for p in landing.rglob("site-*.csv")}

    # the same tick again without the cursor (cursor lost): the same run key, so Dagster dedups it
    assert [r.run_key for r in _tick(sensor, landing).run_requests] == [history.run_key]

    second = _tick(sensor, landing, first.cursor)
    assert second.run_requests == [] and second.skip_message

    # touching one file (new mtime) is a new version of it: its day again, and only that day
    touched = landing / "2026-09-10" / "site-01.csv"
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns - 1_000_000_000))
    third = _tick(sensor, landing, second.cursor)
    [again] = third.run_requests
    assert _days(again) == ("2026-09-10", "2026-09-10") and again.run_key != history.run_key
    assert _tick(sensor, landing, third.cursor).run_requests == []

    # changed content, same mtime second: still a new version (size differs)
    touched.write_text(touched.read_text() + touched.read_text().splitlines()[-1] + "\n")
    fourth = _tick(sensor, landing, third.cursor)
    assert [_days(r) for r in fourth.run_requests] == [("2026-09-10", "2026-09-10")]

    # a new day's files: that day only, in one run for all of its files
    shutil.copytree(fleet / "all" / "2026-09-22", landing / "2026-09-22")
    fifth = _tick(sensor, landing, fourth.cursor)
    [new_day] = fifth.run_requests
    assert _days(new_day) == ("2026-09-22", "2026-09-22")
    assert new_day.tags["anomaly/files"] == str(len(list((landing / "2026-09-22").iterdir())))


def test_a_file_with_a_bad_shape_runs_the_newest_partition(landing):
    sensor = automation.build_landing_sensor(definitions.anomaly_chain, _settings())
    cursor = _tick(sensor, landing).cursor
    (landing / "broken.csv").write_text("sensor;time;reading\npump-1;2026-09-21T00:00:00Z;3\n")
    data = _tick(sensor, landing, cursor)
    [request] = data.run_requests
    newest = automation.open_day(dt.datetime.now(dt.timezone.utc))
    assert _days(request) == (newest, newest)  # the ingest reads it, rejects it, the checks report it
    assert _tick(sensor, landing, data.cursor).run_requests == []


def test_missing_landing_folder_is_a_skip_not_an_error(tmp_path):
    sensor = automation.build_landing_sensor(definitions.anomaly_chain, _settings())
    data = _tick(sensor, tmp_path / "nowhere")
    assert data.run_requests == [] and "does not exist" in data.skip_message


def test_todays_rows_run_at_once_and_later_days_and_unsettled_files_wait(tmp_path):
    root = tmp_path / "landing"
    root.mkdir()
    (root / "pump-1.csv").write_text("timestamp,value\n2026-09-22T23:00:00Z,1\n2026-09-23T01:00:00Z,2\n"
                                     "2026-09-24T01:00:00Z,3\n")
    noon = dt.datetime(2026, 9, 23, 12, 0, tzinfo=dt.timezone.utc)
    plan = automation.plan_landing_runs(root, set(), automation.LandingCursor(), noon, "2013-01-01")
    # yesterday and today (a micro-batch of today's open partition) at once; tomorrow waits
    assert [(a, b) for a, b, _ in plan.runs] == [("2026-09-22", "2026-09-23")]
    assert list(plan.cursor.waiting) == ["2026-09-24"]
    later = automation.plan_landing_runs(root, set(), plan.cursor, noon + dt.timedelta(days=1), "2013-01-01")
    assert [(a, b) for a, b, _ in later.runs] == [("2026-09-24", "2026-09-24")] and later.cursor.waiting == {}
    # more rows for today land: today's partition runs again
    (root / "pump-1b.csv").write_text("timestamp,value\n2026-09-23T13:00:00Z,4\n")
    again = automation.plan_landing_runs(root, set(), plan.cursor, noon + dt.timedelta(hours=1), "2013-01-01")
    assert [(a, b) for a, b, _ in again.runs] == [("2026-09-23", "2026-09-23")]
    # a file modified just now is not read until it has settled
    now = dt.datetime.now(dt.timezone.utc)
    fresh = automation.plan_landing_runs(root, set(), automation.LandingCursor(), now, "2013-01-01", settle_s=60)
    assert fresh.runs == [] and fresh.cursor.files == {} and "next tick" in fresh.notes[-1]


def test_todays_partition_alone_is_a_micro_batch_without_the_report_and_the_copy(tmp_path):
    sensor = automation.build_landing_sensor(definitions.anomaly_chain, _settings(), definitions.anomaly_intraday)
    root = tmp_path / "landing"
    root.mkdir()
    now = dt.datetime.now(dt.timezone.utc)
    hour = now.replace(minute=0, second=0, microsecond=0)
    (root / "today.csv").write_text(f"timestamp,value\n{hour:%Y-%m-%dT%H:%M:%SZ},1\n")
    first = _tick(sensor, root)
    [micro] = first.run_requests
    if automation.open_day(dt.datetime.now(dt.timezone.utc)) != _days(micro)[0]:
        pytest.skip("midnight UTC passed during the test")
    assert micro.job_name == "anomaly_intraday" and _days(micro) == (hour.date().isoformat(),) * 2
    # late rows for yesterday: a closed day (and, once ingested, the days after it), the whole chain
    yesterday = hour - dt.timedelta(days=1)
    (root / "late.csv").write_text(f"timestamp,value\n{yesterday:%Y-%m-%dT%H:%M:%SZ},2\n")
    [whole] = _tick(sensor, root, first.cursor).run_requests
    assert whole.job_name == "anomaly_chain" and _days(whole)[0] == yesterday.date().isoformat()

    repo = definitions.defs.get_repository_def()
    intraday = repo.get_job("anomaly_intraday").asset_layer.executable_asset_keys
    chain = repo.get_job("anomaly_chain").asset_layer.executable_asset_keys
    assert chain - intraday == {dg.AssetKey(["reports", "daily"]), dg.AssetKey("analyst_copy"),
                                dg.AssetKey(["marts", "entity_health"])}  # each costs the history
    assert dg.AssetKey(["alerts", "alerts"]) in intraday


def test_days_before_the_first_partition_are_noted_not_requested(tmp_path):
    root = tmp_path / "landing"
    root.mkdir()
    (root / "old.csv").write_text("timestamp,value\n2012-12-31T23:00:00Z,1\n2013-01-01T01:00:00Z,2\n")
    plan = automation.plan_landing_runs(root, set(), automation.LandingCursor(),
                                        dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), "2013-01-01")
    assert [(a, b) for a, b, _ in plan.runs] == [("2013-01-01", "2013-01-01")]
    assert "before the first partition 2013-01-01" in plan.notes[0]


# ------------------------------------------------------------------------------------ alerts


class _Hook:
    """A real HTTP server on a free local port that records what it is sent."""

    def __init__(self, status: int = 200):
        received, code = self.received, self.status = [], status

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                received.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T0/B0/s3cr3t-token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@dg.asset(partitions_def=dg.DailyPartitionsDefinition(start_date="2026-09-01"))
def readings(context) -> None:
    if context.partition_key == "2026-09-13":
        raise ValueError("landing/2026-09-13/site-01.csv line 2: value 'x' is not a number")


@dg.asset_check(asset=readings, blocking=True)
def readings_have_rows() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, description="0 rows stored for the day")


@dg.asset_check(asset=readings)
def readings_in_range() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN, description="3 values above 1e6")


@dg.asset(deps=[readings], partitions_def=readings.partitions_def)
def downstream() -> None:
    pass


def _sensor_ticks(sensor, instance):
    """Evaluate the sensor like the daemon does: first tick sets the cursor, later ticks act."""
    state = {"cursor": None}

    def tick():
        result = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=state["cursor"]))
        state["cursor"] = result.cursor
        return result

    return tick


def test_failed_run_is_posted_once_naming_run_job_step_and_partition(monkeypatch, caplog, capfd):
    instance = dg.DagsterInstance.ephemeral()
    failure, _ = automation.build_alert_sensors(_settings(ANOMALY_UI_URL="http://dagster.example:3000/"))
    tick = _sensor_ticks(failure, instance)
    tick()  # initial tick: cursor at "now"
    with _Hook() as hook:
        monkeypatch.setenv(automation.FAILURE_WEBHOOK_ENV, hook.url)
        caplog.set_level("DEBUG")
        result = dg.materialize([readings], instance=instance, partition_key="2026-09-13", raise_on_error=False,
                                selection=[readings])
        assert not result.success
        tick()
        tick()  # nothing new: no second post
    [(path, payload)] = hook.received
    assert path == "/services/T0/B0/s3cr3t-token"
    text = payload["text"]
    assert result.run_id in text and "partition 2026-09-13" in text
    assert "failed step readings: ValueError: landing/2026-09-13/site-01.csv line 2" in text
    assert f"http://dagster.example:3000/runs/{result.run_id}" in text
    logged = caplog.text + "".join(capfd.readouterr())
    assert result.run_id in logged  # the alert itself is logged
    assert "s3cr3t" not in logged and "127.0.0.1" not in logged  # the URL never is


def test_blocking_check_failure_fails_the_run_skips_downstream_and_alerts_with_the_check(monkeypatch):
    instance = dg.DagsterInstance.ephemeral()
    failure, checks = automation.build_alert_sensors(_settings())
    tick_failure, tick_checks = _sensor_ticks(failure, instance), _sensor_ticks(checks, instance)
    tick_failure(), tick_checks()
    with _Hook() as hook:
        monkeypatch.setenv(automation.FAILURE_WEBHOOK_ENV, hook.url)
        result = dg.materialize([readings, downstream, readings_have_rows], instance=instance,
                                partition_key="2026-09-14", raise_on_error=False)
        tick_failure(), tick_checks()
    assert not result.success
    assert not any(e.is_step_success and e.step_key == "downstream" for e in result.all_events)
    [(_, payload)] = hook.received  # the failure sensor, not the check sensor too
    assert "partition 2026-09-14" in payload["text"]
    assert "failed step readings_readings_have_rows: DagsterAssetCheckFailedError: 1 blocking asset check failed" in payload["text"]
    assert "run failed" in payload["text"] and "failed check readings:readings_have_rows (ERROR): 0 rows" in payload["text"]


def test_successful_run_with_a_failed_warning_check_alerts_once(monkeypatch):
    instance = dg.DagsterInstance.ephemeral()
    failure, checks = automation.build_alert_sensors(_settings())
    tick_failure, tick_checks = _sensor_ticks(failure, instance), _sensor_ticks(checks, instance)
    tick_failure(), tick_checks()
    with _Hook() as hook:
        monkeypatch.setenv(automation.FAILURE_WEBHOOK_ENV, hook.url)
        ok = dg.materialize([readings, readings_in_range], instance=instance, partition_key="2026-09-15")
        clean = dg.materialize([readings], instance=instance, partition_key="2026-09-16")
        tick_failure(), tick_checks(), tick_checks()
    assert ok.success and clean.success
    [(_, payload)] = hook.received
    assert ok.run_id in payload["text"] and "failed check readings:readings_in_range (WARN): 3 values above 1e6" in payload["text"]


def test_undeliverable_alert_is_reported_on_the_tick_without_naming_the_url(monkeypatch):
    instance = dg.DagsterInstance.ephemeral()
    failure, _ = automation.build_alert_sensors(_settings())
    tick = _sensor_ticks(failure, instance)
    tick()
    with _Hook(status=404) as hook:  # 4xx: not retried
        monkeypatch.setenv(automation.FAILURE_WEBHOOK_ENV, hook.url)
        result = dg.materialize([readings], instance=instance, partition_key="2026-09-13", raise_on_error=False,
                                selection=[readings])
        data = tick()
    assert len(hook.received) == 1
    [reaction] = data.dagster_run_reactions  # the daemon shows this error on the sensor tick
    assert reaction.dagster_run.run_id == result.run_id
    error = reaction.error.to_string()
    assert "WebhookError: ANOMALY_FAILURE_WEBHOOK_URL: delivery failed after 1 attempt(s) (HTTP 404)" in error
    assert "s3cr3t" not in error and "127.0.0.1" not in error


# ------------------------------------------------------------------------------------ analysts' copy


def test_publish_replaces_the_copy_atomically_and_leaves_the_warehouse_free(tmp_path):
    wh, copy = tmp_path / "warehouse.duckdb", tmp_path / "out" / "analytics.duckdb"
    con = duckdb.connect(str(wh))
    con.execute("CREATE SCHEMA marts; CREATE TABLE marts.fleet_health AS SELECT range AS day FROM range(1000)")
    con.close()
    first = publish(wh, copy)
    assert (first.tables, first.rows) == (1, 1000)
    assert oct(copy.stat().st_mode & 0o777) == "0o444"

    reader = duckdb.connect(str(copy), read_only=True)  # an analyst with the old copy open
    con = duckdb.connect(str(wh))  # the warehouse is not held by the publish
    con.execute("INSERT INTO marts.fleet_health SELECT range + 1000 FROM range(500)")
    con.close()
    second = publish(wh, copy)
    assert second.rows == 1500
    assert reader.execute("SELECT count(*) FROM marts.fleet_health").fetchone()[0] == 1000  # still the old file
    reader.close()
    fresh = duckdb.connect(str(copy), read_only=True)
    assert fresh.execute("SELECT count(*) FROM marts.fleet_health").fetchone()[0] == 1500
    fresh.close()
    assert sorted(p.name for p in copy.parent.iterdir()) == ["analytics.duckdb"]  # no temp or WAL left
    with pytest.raises(FileNotFoundError, match="does not exist"):
        publish(tmp_path / "missing.duckdb", copy)


# ------------------------------------------------------------------------------------ writer pool


def test_every_step_that_opens_the_warehouse_is_in_the_pool_the_instance_limits_to_one(tmp_path):
    repo = definitions.defs.get_repository_def()
    nodes = {*(a.node_def for a in repo.assets_defs_by_key.values()),
             *(c.node_def for c in repo.asset_checks_defs_by_key.values())}
    assert len(nodes) >= 10
    assert {n.name: n.pool for n in nodes} == {n.name: "duckdb_writer" for n in nodes}
    # the project's instance config, read by Dagster itself: a pool nobody configured gets limit 1
    shutil.copy(Path(definitions.__file__).parents[1] / "dagster_home" / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        assert instance.event_log_storage.get_pool_config().default_pool_limit == 1
        assert instance.event_log_storage.supports_global_concurrency_limits  # sqlite storage enforces it
        instance.event_log_storage.initialize_concurrency_limit_to_default("duckdb_writer")
        assert instance.event_log_storage.get_concurrency_info("duckdb_writer").slot_count == 1
    finally:
        instance.dispose()


def test_ingested_days_come_from_the_instance():
    """Days raw/observations was materialized for, with the start of the run that did it."""
    instance = dg.DagsterInstance.ephemeral()
    assert automation.ingested_days(instance, ["2026-09-07"]) == {}  # nothing ingested yet

    @dg.asset(key=["raw", "observations"], partitions_def=dg.DailyPartitionsDefinition(start_date="2026-09-01"))
    def observations():
        return None

    before = time.time()
    assert dg.materialize([observations], instance=instance, partition_key="2026-09-07").success
    got = automation.ingested_days(instance, ["2026-09-06", "2026-09-07"])
    assert list(got) == ["2026-09-07"] and before - 1 <= got["2026-09-07"] <= time.time()


def test_late_rows_rescore_every_day_after_them(tmp_path):
    root = tmp_path / "landing"
    root.mkdir()
    (root / "pump-1.csv").write_text("timestamp,value\n2026-09-20T05:00:00Z,1\n")
    noon = dt.datetime(2026, 9, 23, 12, 0, tzinfo=dt.timezone.utc)
    scored = {"2026-09-21": 0.0, "2026-09-22": 0.0}  # later days were ingested (and scored) before
    plan = automation.plan_landing_runs(root, set(), automation.LandingCursor(), noon, "2013-01-01",
                                        ingested=lambda days: {d: scored[d] for d in days if d in scored})
    [(first, last, versions)] = plan.runs
    assert (first, last) == ("2026-09-20", "2026-09-23") and len(versions) == 1
    assert "rescoring 2026-09-20..2026-09-23" in plan.notes[-1]
    # the same file with nothing scored after its day: that day only
    alone = automation.plan_landing_runs(root, set(), automation.LandingCursor(), noon, "2013-01-01",
                                         ingested=lambda days: {})
    assert [(a, b) for a, b, _ in alone.runs] == [("2026-09-20", "2026-09-20")]
