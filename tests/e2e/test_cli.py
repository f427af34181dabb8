"""The shell as a new user meets it: `anomaly-assets demo` into the default data folder, quiet, with a
summary that names every failed check; `summary` right after; `dagster dev`'s landing sensor then
finds nothing left to run; and history from 2011 backfills with no setting."""

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from anomaly_assets.defs import automation
from anomaly_assets.defs.automation import failed_checks
from anomaly_assets.defs.resources import LandingFolder

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CLI = str(REPO / ".venv" / "bin" / "anomaly-assets")


def _env(root: Path) -> dict:
    home = root / "dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANOMALY_")}  # as on a fresh shell
    return {**env, "DAGSTER_HOME": str(home), "GX_ANALYTICS_ENABLED": "false", "ANOMALY_WORKERS": "1"}


def _cli(root: Path, *args, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], cwd=root, env=env or _env(root), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("shell")
    p = _cli(root, "demo", "--entities", "6", "--days", "16")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return root, p


def test_demo_is_quiet_and_names_every_failed_check(demo):
    root, p = demo
    lines = p.stdout.splitlines()
    assert len(lines) <= 50, p.stdout  # fits on one screen
    assert p.stderr == "", p.stderr[-2000:]  # no library warning or log line
    steps = [line for line in lines if re.match(r"^  (ok|warn|FAILED) ", line)]
    for asset in ("raw/observations", "features/decomposition", "scoring/anomaly_scores", "alerts/alerts",
                  "marts/entities", "analyst_copy"):
        assert any(f" {asset} " in line for line in steps), (asset, steps)
    assert any(re.search(r"raw/observations +[\d,]+ rows +[\d.]+ s", line) for line in steps)
    instance = dg.DagsterInstance.from_config(str(root / "dagster_home"))
    try:
        [run] = instance.get_runs()
        failed = failed_checks(instance, run.run_id)
    finally:
        instance.dispose()
    checks = next(line for line in lines if line.startswith("checks: "))
    assert checks.startswith(f"checks: {12 - len(failed)} passed, {len(failed)} failed")
    for line in failed:  # every failed check, warnings included, is in the summary
        assert f"  {line}" in lines
    # everything is where every tool looks by default
    data = root / "data"
    assert {"landing", "warehouse.duckdb", "analytics.duckdb", "labels.csv", "entities.csv", ".demo"} <= {
        x.name for x in data.iterdir()}
    assert lines[-1].startswith("next: make ui (http://127.0.0.1:3000) · report: data/reports/daily-")


def test_summary_and_report_work_right_after_the_demo(demo):
    root, _ = demo
    p = _cli(root, "summary")
    assert p.returncode == 0 and "top anomalies:" in p.stdout and "evaluation vs labels" in p.stdout, p.stderr
    p = _cli(root, "report", "--day", "2026-09-15")
    assert p.returncode == 0, p.stderr
    assert (root / "data" / "reports" / "daily-2026-09-15.html").is_file()
    p = _cli(root, "report", "--day", "15/09/2026")
    assert p.returncode == 2 and "--day '15/09/2026' is not a date" in p.stderr


def test_the_landing_sensor_leaves_what_the_demo_ingested(demo):
    root, _ = demo
    landing = root / "data" / "landing"
    from anomaly_assets import definitions

    sensor = automation.build_landing_sensor(definitions.anomaly_chain,
                                             automation.load_automation_settings({"ANOMALY_LANDING_SETTLE_SECONDS": "0"}))
    repo = dg.Definitions(assets=[*definitions.python_assets, *definitions.sql_assets, definitions.analyst_copy],
                          sensors=[sensor], resources=definitions.resources()).get_repository_def()
    instance = dg.DagsterInstance.from_config(str(root / "dagster_home"))
    try:
        def tick(cursor=None):
            ctx = dg.build_sensor_context(cursor=cursor, instance=instance, repository_def=repo,
                                          resources={"landing": LandingFolder(path=str(landing))})
            return sensor.evaluate_tick(ctx)

        first = tick()
        assert first.run_requests == [], [r.tags for r in first.run_requests]
        # a file written after the demo's run is new: its day is run again, and only that day
        changed = sorted(landing.rglob("site-*.csv"))[-1]
        changed.write_text(changed.read_text())
        future = dt.datetime.now().timestamp() + 5
        os.utime(changed, (future, future))
        [again] = tick(first.cursor).run_requests
        assert again.partition_key == changed.parent.name
    finally:
        instance.dispose()


def test_the_demo_never_replaces_data_that_is_not_a_demo(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "warehouse.duckdb").write_text("someone's data")
    p = _cli(tmp_path, "demo", "--entities", "2", "--days", "2")
    assert p.returncode == 1 and "holds data that is not a demo's" in p.stderr
    assert (tmp_path / "data" / "warehouse.duckdb").read_text() == "someone's data"


def test_history_from_2011_backfills_with_no_setting(tmp_path):
    landing = tmp_path / "data" / "landing"
    landing.mkdir(parents=True)
    ts = [dt.datetime(2011, 7, 1) + dt.timedelta(hours=h) for h in range(24 * 9)]
    (landing / "machine_temperature.csv").write_text(
        "timestamp,value\n" + "".join(f"{t:%Y-%m-%d %H:%M:%S},{60 + (i % 24) / 4}\n" for i, t in enumerate(ts)))
    p = _cli(tmp_path, "backfill", "--verbose")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "backfilling 2011-07-01 .. 2011-07-09 (9 days)" in p.stdout
    assert "STEP_SUCCESS" in p.stderr  # --verbose: Dagster's event log
    assert "2011-07-01" in (tmp_path / "data" / "warehouse.partitions.json").read_text()
    con = duckdb.connect(str(tmp_path / "data" / "warehouse.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*), min(ts)::DATE FROM raw.observations").fetchone() == (
            24 * 9, dt.date(2011, 7, 1))
    finally:
        con.close()


def test_publish_refreshes_the_analysts_copy_or_copies_it_from_scratch(demo):
    root, _ = demo
    p = _cli(root, "publish")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "changed slices)" in p.stdout and "refreshed" in p.stdout, p.stdout
    p = _cli(root, "publish", "--full")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "copied from scratch: asked for (full)" in p.stdout, p.stdout


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
