"""reports/daily: the daily HTML report (anomaly_assets/report.py) of the latest day with scores.

Written after every run, once the marts, alerts and evaluation are built, to
``reports/daily-<day>.html`` beside the warehouse (and ``reports/latest.html``), each plot also as
a PNG in ``reports/<day>/``; the top plots are also shown in the asset's metadata in the UI.
Unpartitioned like the marts: it reports the latest scored day of the warehouse
(``anomaly-assets report --day D`` writes any other day).
"""

import base64
import shutil
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from anomaly_assets.defs.partitions import WRITER_POOL
from anomaly_assets.defs.resources import MetricCatalog
from anomaly_assets.report import write_report

# shown in the UI's metadata (each ~60-120 kB as a data: URI); the file holds them all
UI_PLOTS = 2


class ReportFolder(dg.ConfigurableResource):
    """Where daily reports are written (``reports/`` beside the warehouse)."""

    path: str

    @property
    def root(self) -> Path:
        return Path(self.path)


@dg.asset(
    key=["reports", "daily"],
    deps=[dg.AssetKey(["marts", "fleet_health"]), dg.AssetKey(["marts", "current_health"]),
          dg.AssetKey(["alerts", "alerts"]), dg.AssetKey(["evaluation", "metrics"])],
    group_name="reports",
    kinds={"html", "python"},
    pool=WRITER_POOL,  # reads the warehouse: no writer may hold it meanwhile
    description="The daily HTML report: fleet health, top alerts and entities with their plots (actual vs the "
                "expected band), entity ranking, failed checks, evaluation.",
)
def daily_report(context: dg.AssetExecutionContext, duckdb: DuckDBResource, catalog: MetricCatalog,
                 report_folder: ReportFolder) -> dg.MaterializeResult:
    from anomaly_assets.defs.automation import failed_checks

    # the checks of this run: the in-process executor runs the plan level by level, and every
    # checked asset is several levels upstream of this one, so their check steps have run
    failed = failed_checks(context.instance, context.run.run_id)
    with duckdb.get_connection() as con:
        from anomaly_assets.report import latest_day

        day = latest_day(con)
        if day is None:
            context.log.info("no scored point yet: no report")
            return dg.MaterializeResult(metadata={"day": "none", "plots": 0})
        path, r = write_report(con, report_folder.root / f"daily-{day}.html", day, failed_checks=failed,
                               units=catalog.load().units, source="warehouse",
                               png_dir=report_folder.root / day)
    shutil.copyfile(path, report_folder.root / "latest.html")
    shown = "\n\n".join(f"**{f.title}**: {f.why}\n\n![{f.entity_id}](data:image/png;base64,{base64.b64encode(f.png).decode()})"
                        for f in r.figures[:UI_PLOTS])
    n = r.numbers
    return dg.MaterializeResult(metadata={
        "day": r.day,
        "path": dg.MetadataValue.path(str(path)),
        "plot_files": dg.MetadataValue.path(str(report_folder.root / r.day)),
        "plots": len(r.figures),
        "top_plots": dg.MetadataValue.md(shown or "_no scored point on this day_"),
        "flagged_points": n["flagged_points"],
        "flagged_share": float(n["flagged_share"]),
        "critical_points": n["critical_points"],
        "open_alerts": n["open_alerts"],
        "failed_checks": len(r.failed_checks),
    })
