"""The daily report: one self-contained HTML page a person reads in the morning.

What it holds, for a day D (default: the latest day with scores): the fleet's numbers for D,
fleet health over time, the top alerts and the day's top entities each with its plot (actual
against the expected band, anomalies marked: :func:`anomaly_assets.plots.band_plot`) and its
``why``, the entities ranked by how they are doing now, the checks that failed, and the
evaluation against labels when there are labels. Images are embedded (``data:`` URIs), so the
file can be mailed or opened anywhere.

:func:`gather` reads everything from a DuckDB connection (the analysts' copy from the shell, the
warehouse inside the ``reports/daily`` asset); :func:`render` makes the page; :func:`write_report`
does both. ``anomaly-assets report [--day D] [--out FILE]`` is the shell's way in.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from anomaly_assets.plots import band_plot, fleet_plot

TOP = 5  # alerts, and entities of the day, each with a plot
RANKED = 10  # entities in the ranking table
HISTORY = pd.Timedelta(days=6)  # a plot shows the days before the moment it explains


@dataclass
class Figure:
    """One plotted subject: an alert or an entity of the day."""

    kind: str  # "alert" or "entity"
    entity_id: str
    title: str
    why: str
    facts: dict[str, str]
    png: bytes


@dataclass
class Report:
    """Everything the page shows (numbers as read from the warehouse)."""

    day: str
    numbers: dict[str, float | int]
    fleet: pd.DataFrame
    figures: list[Figure]
    ranking: pd.DataFrame
    failed_checks: list[str]
    evaluation: pd.DataFrame
    fleet_png: bytes | None = None
    source: str = ""
    generated_at: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def _has(con, schema: str, name: str) -> bool:
    return bool(con.execute(
        "SELECT count(*) FROM (SELECT schema_name, table_name FROM duckdb_tables() UNION ALL "
        "SELECT schema_name, view_name FROM duckdb_views()) WHERE schema_name = ? AND table_name = ?",
        [schema, name]).fetchone()[0])


def latest_day(con) -> str | None:
    """The latest UTC day with a scored point, or None."""
    if not _has(con, "scoring", "anomaly_scores"):
        return None
    ts = con.execute("SELECT max(ts) FROM scoring.anomaly_scores WHERE severity <> 'cold_start'").fetchone()[0]
    return None if ts is None else str(pd.Timestamp(ts).tz_convert("UTC").date())


def day_numbers(con, day: str) -> dict[str, float | int]:
    """The day's fleet figures: entities and points scored, flagged, critical, flagged share, open alerts."""
    start = pd.Timestamp(day, tz="UTC")
    e, p, f, c = con.execute(
        "SELECT count(DISTINCT entity_id), count(*), coalesce(count_if(is_anomaly), 0), coalesce(count_if(severity = 'critical'), 0) "
        "FROM scoring.anomaly_scores WHERE ts >= ? AND ts < ? AND severity <> 'cold_start'",
        [start, start + pd.Timedelta(days=1)]).fetchone()
    open_alerts = con.execute("SELECT count(*) FROM alerts.alerts WHERE status IN ('open', 'acknowledged')"
                              ).fetchone()[0] if _has(con, "alerts", "alerts") else 0
    return {"entities_scored": int(e), "points_scored": int(p), "flagged_points": int(f), "critical_points": int(c),
            "flagged_share": (f / p) if p else 0.0, "open_alerts": int(open_alerts)}


def _top_metrics(con, entity: str, lo, hi, n: int = 3) -> list[str]:
    """The entity's metrics that explained most of its flagged points in [lo, hi); else the ones
    that deviated most (largest |residual_z|)."""
    rows = con.execute(
        "SELECT metric FROM scoring.explanations WHERE entity_id = ? AND ts >= ? AND ts < ? "
        "GROUP BY metric ORDER BY sum(contribution) DESC, metric LIMIT ?", [entity, lo, hi, n]).fetchall()
    if not rows:
        rows = con.execute(
            "SELECT metric FROM features.decomposition WHERE entity_id = ? AND ts >= ? AND ts < ? "
            "GROUP BY metric ORDER BY max(abs(residual_z)) DESC NULLS LAST, metric LIMIT ?", [entity, lo, hi, n]).fetchall()
    return [r[0] for r in rows]


def entity_frames(con, entity: str, lo, hi, metrics: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``features.decomposition`` rows (with the band where the table has one) of ``metrics`` and
    the entity's flagged points, in [lo, hi)."""
    band = {c for (c,) in con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE schema_name = 'features' AND table_name = 'decomposition'"
    ).fetchall()} >= {"lower", "upper"}
    cols = "metric, ts, value, expected" + (", lower, upper" if band else ", NULL::DOUBLE AS lower, NULL::DOUBLE AS upper")
    series = con.execute(
        f"SELECT {cols} FROM features.decomposition WHERE entity_id = ? AND ts >= ? AND ts < ? "
        "AND metric IN (SELECT unnest(?::VARCHAR[])) ORDER BY metric, ts", [entity, lo, hi, metrics]).df()
    flags = con.execute(
        "SELECT ts, severity FROM scoring.anomaly_scores WHERE entity_id = ? AND ts >= ? AND ts < ? AND is_anomaly "
        "ORDER BY ts", [entity, lo, hi]).df()
    return series, flags


def _figure(con, kind, entity, title, why, facts, lo, hi, units) -> Figure | None:
    metrics = _top_metrics(con, entity, lo, hi)
    if not metrics:
        return None
    series, flags = entity_frames(con, entity, lo, hi, metrics)
    if series.empty:
        return None
    return Figure(kind, entity, title, why or "", facts, band_plot(series, flags, title=title, metrics=metrics, units=units))


def gather(con, day: str | None = None, *, failed_checks: list[str] | None = None, units: dict[str, str] | None = None,
           source: str = "") -> Report:
    """Read the day's report from ``con`` (a warehouse or the analysts' copy).

    Parameters
    ----------
    con : duckdb connection
    day : str, optional
        YYYY-MM-DD; default the latest day with a scored point.
    failed_checks : list of str, optional
        Lines naming the checks that failed (from the Dagster instance; the warehouse has none).
    units : dict, optional
        metric -> unit for the plots' axes.

    Returns
    -------
    Report

    Raises
    ------
    ValueError
        When the warehouse has no scores (nothing to report).
    """
    day = day or latest_day(con)
    if day is None:
        raise ValueError("nothing to report: scoring.anomaly_scores has no scored point (run the chain first)")
    start = pd.Timestamp(day, tz="UTC")
    end = start + pd.Timedelta(days=1)
    figures: list[Figure] = []
    if _has(con, "alerts", "alerts"):
        alerts = con.execute(
            """SELECT alert_id, entity_id, title, why, severity, status, team, confidence, opened_at, last_seen_at
               FROM alerts.alerts WHERE status NOT IN ('pending', 'expired') AND opened_at < ?
               ORDER BY status NOT IN ('open', 'acknowledged'), last_seen_at >= ? DESC,
                 CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, confidence DESC,
                 last_seen_at DESC, alert_id LIMIT ?""", [end, start, TOP]).df()
        for a in alerts.itertuples():
            opened, seen = pd.Timestamp(a.opened_at), pd.Timestamp(a.last_seen_at)
            lo, hi = opened - pd.Timedelta(days=3), max(seen + pd.Timedelta(hours=6), opened + pd.Timedelta(days=1))
            f = _figure(con, "alert", a.entity_id, a.title, a.why,
                        {"alert": a.alert_id[:12], "severity": a.severity, "status": a.status, "team": a.team,
                         "confidence": f"{a.confidence:.2f}", "opened": f"{opened:%Y-%m-%d %H:%M}",
                         "last seen": f"{seen:%Y-%m-%d %H:%M}"}, lo, min(hi, end), units)
            if f:
                figures.append(f)
    # the day's top entities by their strongest point, flagged or not: a quiet day still shows
    # who came closest, against their bands
    top = con.execute(
        """SELECT entity_id, ts, severity, anomaly_score, why FROM scoring.anomaly_scores
           WHERE ts >= ? AND ts < ? AND anomaly_score IS NOT NULL
           QUALIFY row_number() OVER (PARTITION BY entity_id ORDER BY anomaly_score DESC, ts) = 1
           ORDER BY anomaly_score DESC, entity_id LIMIT ?""", [start, end, TOP]).df()
    for t in top.itertuples():
        ts = pd.Timestamp(t.ts)
        f = _figure(con, "entity", t.entity_id, f"{t.entity_id}: {t.severity} at {ts:%Y-%m-%d %H:%M} UTC",
                    t.why if isinstance(t.why, str) else f"strongest point of the day (score {t.anomaly_score:.3f})",
                    {"score": f"{t.anomaly_score:.4f}", "severity": t.severity, "peak": f"{ts:%Y-%m-%d %H:%M}"},
                    start - HISTORY, end, units)
        if f:
            figures.append(f)
    fleet = con.execute("SELECT * FROM marts.fleet_health WHERE day <= ? ORDER BY day", [start.date()]).df() \
        if _has(con, "marts", "fleet_health") else pd.DataFrame()
    if _has(con, "marts", "current_health"):
        ranking = con.execute(
            "SELECT rank_now AS rank, entity_id, flagged_24h, critical_24h, round(max_score_24h, 4) AS max_score_24h, "
            "flagged_7d, open_alerts, last_anomaly_why FROM marts.current_health ORDER BY rank_now LIMIT ?", [RANKED]).df()
    elif _has(con, "marts", "entity_health"):
        ranking = con.execute(
            "SELECT health_rank AS rank, entity_id, anomalies, critical_points, last_anomaly_why "
            "FROM marts.entity_health ORDER BY health_rank LIMIT ?", [RANKED]).df()
    else:
        ranking = pd.DataFrame()
    evaluation = con.execute(
        "SELECT best_f1, f1, precision, recall, auc_pr, event_recall, event_precision, points, labeled_points "
        "FROM evaluation.metrics WHERE entity_id = '*'").df() if _has(con, "evaluation", "metrics") else pd.DataFrame()
    return Report(day=day, numbers=day_numbers(con, day), fleet=fleet, figures=figures, ranking=ranking,
                  failed_checks=list(failed_checks or []), evaluation=evaluation,
                  fleet_png=fleet_plot(fleet.tail(60)) if len(fleet) else None, source=source)


# ------------------------------------------------------------------------------------ HTML

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1f2933;background:#f8f9fa}
main{max-width:1000px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dee2e6;padding-bottom:4px}
.sub{color:#6c757d;font-size:12px}
.numbers{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.numbers div{background:#fff;border:1px solid #dee2e6;border-radius:6px;padding:8px 14px;min-width:120px}
.numbers b{display:block;font-size:20px}
.card{background:#fff;border:1px solid #dee2e6;border-radius:6px;padding:12px;margin:12px 0}
.card img{max-width:100%;display:block;margin-top:8px}
.facts{color:#495057;font-size:12px} .why{margin:6px 0}
table{border-collapse:collapse;background:#fff;width:100%;font-size:13px}
th,td{border:1px solid #dee2e6;padding:4px 8px;text-align:left;vertical-align:top} th{background:#f1f3f5}
.sev-critical{color:#c2255c;font-weight:600} .sev-warning{color:#e8590c;font-weight:600}
.ok{color:#2b8a3e}
"""

_LABELS = {"entities_scored": "entities scored", "points_scored": "points scored", "flagged_points": "flagged points",
           "critical_points": "critical points", "flagged_share": "flagged share", "open_alerts": "open alerts"}


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _table(df: pd.DataFrame, testid: str) -> str:
    if df.empty:
        return f'<p data-testid="{testid}">none</p>'
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        cells = []
        for v in row:
            if isinstance(v, float):
                text = "" if pd.isna(v) else f"{v:.4g}"
            elif isinstance(v, pd.Timestamp):
                text = f"{v:%Y-%m-%d}" if v == v.normalize() and v.tzinfo is None else f"{v:%Y-%m-%d %H:%M}"
            else:
                text = "" if v is None or (not isinstance(v, (list, dict)) and pd.isna(v)) else str(v)
            cells.append(f"<td>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table data-testid="{testid}"><tr>{head}</tr>{"".join(body)}</table>'


def render(r: Report) -> str:
    """The report as one HTML page (images embedded)."""
    def number(k, v):
        text = f"{v:.2%}" if k == "flagged_share" else f"{v:,}"
        return f'<div><b data-metric="{k}" data-value="{v}">{text}</b>{_LABELS[k]}</div>'

    parts = [f"<h1>Fleet report for {r.day}</h1>",
             f'<p class="sub">generated {r.generated_at}' + (f" from {html.escape(r.source)}" if r.source else "") + "</p>",
             '<div class="numbers">' + "".join(number(k, v) for k, v in r.numbers.items()) + "</div>",
             "<h2>Fleet health over time</h2>"]
    if r.fleet_png:
        parts.append(_img(r.fleet_png, "fleet health per day"))
    parts.append(_table(r.fleet.tail(7).iloc[::-1].drop(columns=["top_entities"], errors="ignore"), "fleet-health"))
    for kind, heading in (("alert", "Top alerts"), ("entity", f"Top entities on {r.day}")):
        parts.append(f"<h2>{heading}</h2>")
        figs = [f for f in r.figures if f.kind == kind]
        if not figs:
            parts.append(f'<p data-testid="no-{kind}">none</p>')
        for f in figs:
            facts = " · ".join(f"{k} {html.escape(str(v))}" for k, v in f.facts.items())
            sev = f.facts.get("severity", "")
            parts.append(f'<div class="card" data-testid="{kind}" data-entity="{html.escape(f.entity_id)}">'
                         f'<b class="sev-{html.escape(sev)}">{html.escape(f.title)}</b>'
                         f'<div class="facts">{facts}</div><div class="why">{html.escape(f.why)}</div>'
                         f"{_img(f.png, f'{f.kind} {f.entity_id}: actual vs expected band')}</div>")
    parts.append("<h2>Entities now (worst first)</h2>")
    parts.append(_table(r.ranking, "ranking"))
    parts.append("<h2>Checks that failed</h2>")
    if r.failed_checks:
        parts.append('<ul data-testid="failed-checks">' + "".join(f"<li>{html.escape(c)}</li>" for c in r.failed_checks)
                     + "</ul>")
    else:
        parts.append('<p class="ok" data-testid="failed-checks">none: every check of the latest run passed</p>')
    parts.append("<h2>Evaluation against labels</h2>")
    parts.append(_table(r.evaluation, "evaluation") if len(r.evaluation) else
                 '<p data-testid="evaluation">no labels configured</p>')
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<title>Fleet report {r.day}</title><style>{_CSS}</style></head><body><main>"
            + "\n".join(parts) + "</main></body></html>\n")


def write_report(con, out: Path, day: str | None = None, *, png_dir: Path | None = None, **kwargs) -> tuple[Path, Report]:
    """Gather, render and write the report to ``out`` (atomically); with ``png_dir``, each plot
    also as ``<kind>-<entity>.png`` there. Returns the path and the report."""
    r = gather(con, day, **kwargs)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if png_dir is not None:
        png_dir = Path(png_dir)
        png_dir.mkdir(parents=True, exist_ok=True)
        for f in r.figures:
            (png_dir / f"{f.kind}-{f.entity_id}.png").write_bytes(f.png)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(render(r), encoding="utf-8")
    tmp.replace(out)
    return out, r


def latest_failed_checks(instance, job_name: str = "anomaly_chain") -> list[str]:
    """The failed checks of the latest finished run of ``job_name`` recorded in ``instance``."""
    import dagster as dg

    from anomaly_assets.defs.automation import failed_checks

    runs = instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=[
        dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]), limit=1)
    return failed_checks(instance, runs[0].run_id) if runs else []


# ------------------------------------------------------------------------------------ CLI


def add_cli(sub) -> None:
    r = sub.add_parser("report", help="write the daily HTML report (default: the latest day with scores)")
    r.add_argument("--day", help="YYYY-MM-DD (default: the latest day with scores)")
    r.add_argument("--out", type=Path, help="HTML file (default: reports/daily-DAY.html beside the warehouse)")


def run_cli(a) -> int:
    """`anomaly-assets report`: reads the analysts' copy (never locks the warehouse), or the
    warehouse when there is no copy yet."""
    import sys

    import duckdb

    from anomaly_assets.cli import _instance, _short
    from anomaly_assets.config import load_metric_families
    from anomaly_assets.settings import load_settings

    s = load_settings()
    source = s.analyst_copy if s.analyst_copy.exists() else s.warehouse
    if not source.exists():
        print(f"no warehouse at {s.warehouse}: run `anomaly-assets demo` or `anomaly-assets backfill` first", file=sys.stderr)
        return 1
    if a.day:
        try:
            dt.date.fromisoformat(a.day)
        except ValueError:
            print(f"--day {a.day!r} is not a date (expected YYYY-MM-DD)", file=sys.stderr)
            return 2
    instance = _instance()
    try:
        failed = latest_failed_checks(instance)
    finally:
        instance.dispose()
    con = duckdb.connect(str(source), read_only=True)
    try:
        day = a.day or latest_day(con)
        out = a.out or s.report_dir / f"daily-{day}.html"
        path, r = write_report(con, out, day, failed_checks=failed, units=load_metric_families(s.families).units,
                               source=_short(source))
    except ValueError as e:
        print(str(e), file=sys.stderr)
        return 1
    finally:
        con.close()
    n = r.numbers
    print(f"report for {r.day}: {n['flagged_points']:,} flagged of {n['points_scored']:,} points "
          f"({n['flagged_share']:.2%}), {len(r.figures)} plots, {len(r.failed_checks)} failed check(s) -> {_short(path)}")
    return 0
