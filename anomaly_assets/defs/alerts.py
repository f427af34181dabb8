"""alerts.alerts (rules over scores, explanations and the decomposition), alert precision, and the
sensor that delivers alerts to webhooks.

The asset reads what the rules need for the run's days (plus a lookback that fills the rules'
windows), the alerts that may continue from earlier days, and what people did (alerts.alert_events);
the rules (core/rules/) do the rest. Alerts opened in the run's days are rebuilt unless a person
touched them or a later day's run extended them, so re-running a day gives the same alerts.
"""

import datetime as dt
import json
from pathlib import Path
from typing import Optional

import dagster as dg
import pandas as pd
from dagster_duckdb import DuckDBResource

from anomaly_assets import alert_lifecycle as life
from anomaly_assets import warehouse as wh
from anomaly_assets.alert_config import AlertRules, alert_paths, calendar_path, load_alert_rules, load_entities
from anomaly_assets.calendars import event_days, load_calendar
from anomaly_assets.core import rules as core
from anomaly_assets.core.explain import _FAMILY_PATTERNS
from anomaly_assets.core.semantics import infer_kind
from anomaly_assets.core.fleet import DAY
from anomaly_assets.defs.metadata import column_schema, markdown_preview, table_metadata, time_window
from anomaly_assets.defs.partitions import WRITER_POOL, daily_table_asset
from anomaly_assets.defs.resources import LandingFolder, MetricCatalog
from anomaly_assets.landing import read_labels

LOOKBACK = pd.Timedelta(days=3)  # rule windows (bursts, runs, stuck readings) reach this far back


def rule_lookback(cfg: AlertRules) -> pd.Timedelta:
    """How far before a run's first day the rules read: LOOKBACK, or the daily readings a business
    rule needs (its window, the reading before it, its baseline, recurrence or same-weekday history)."""
    days = [core.readings_needed(r) + 1 for r in cfg.active if r.type == "business_gap"]
    return max(LOOKBACK, pd.Timedelta(days=max(days, default=0)))


def window_lookback(cfg: AlertRules) -> pd.Timedelta:
    """How far back every metric is read: LOOKBACK, or a business rule's window plus the reading
    before it. Only the metrics business rules judge are read as far as :func:`rule_lookback`."""
    days = [r.window + 2 for r in cfg.active if r.type == "business_gap"]
    return max(LOOKBACK, pd.Timedelta(days=max(days, default=0)))


def history_metrics(cfg: AlertRules, metrics, kinds) -> list[str]:
    """The metrics business rules read a long history of (baseline, recurrence, same weekday, a
    count's law): those they name or whose kind (declared, else from the name) they watch, their
    ``others``, and the stock metrics where a count's law leaves sold-out days out."""
    out = set()
    for r in cfg.active:
        if r.type != "business_gap" or core.readings_needed(r) + 1 <= window_lookback(cfg).days:
            continue
        out |= set(r.metrics or [m for m in metrics if infer_kind(m, kinds) in (r.kinds or ())]) | set(r.others)
        if r.max_tail_p is not None:  # the law leaves out the days the stock was out
            out |= set(r.stock_metrics or [m for m in metrics if infer_kind(m, kinds) == "stock"])
    return sorted(out)


class AlertRulebook(dg.ConfigurableResource):
    """configs/alert_rules.yaml and the entity register (sites, tags, teams), validated when loaded."""

    path: str
    entities: Optional[str] = None
    families: Optional[str] = None  # metric_families.yaml: families the rules may name
    calendar: Optional[str] = None  # calendar.csv: known events (holidays, promotions) alerts stay quiet on

    def known_families(self) -> set[str]:
        from anomaly_assets.config import load_metric_families

        fam = load_metric_families(Path(self.families) if self.families else None)
        return set(fam.families.values()) | {f for f, _ in _FAMILY_PATTERNS}

    def load(self) -> AlertRules:
        return load_alert_rules(Path(self.path), self.known_families())

    def entity_frame(self) -> pd.DataFrame:
        reg = load_entities(Path(self.entities) if self.entities else None)
        return pd.DataFrame([{"entity_id": k, "site": v.site, "tags": list(v.tags), "team": v.team}
                             for k, v in reg.entities.items()], columns=["entity_id", "site", "tags", "team"])

    def attributes(self) -> Optional[pd.DataFrame]:
        """Every column of a CSV entity register (price_usd, store, sku, country, ...), as text."""
        if not self.entities or not self.entities.lower().endswith(".csv") or not Path(self.entities).is_file():
            return None
        return pd.read_csv(self.entities, dtype=str, keep_default_na=False)

    def events(self, entity_ids, start, end) -> Optional[pd.DataFrame]:
        """Known event days (``calendars.event_days``) of ``entity_ids`` in the years of [start, end]."""
        cal = load_calendar(Path(self.calendar)) if self.calendar else None
        attrs = self.attributes()
        if cal is None and (attrs is None or "country" not in attrs.columns):
            return None
        return event_days(entity_ids, range(pd.Timestamp(start).year, pd.Timestamp(end).year + 1), attrs, cal)


def alert_rulebook(families: Optional[Path] = None, environ=None) -> AlertRulebook:
    """The rulebook from ANOMALY_ALERT_RULES / ANOMALY_ENTITIES, validated now: a bad rule fails the load."""
    rules, entities = alert_paths(environ)
    cal = calendar_path(environ)
    book = AlertRulebook(path=str(rules), entities=str(entities), families=str(families) if families else None,
                         calendar=str(cal) if cal else None)
    book.load()
    book.entity_frame()
    if cal:
        load_calendar(cal)  # a bad calendar fails the load, naming the file and line
    return book


CHUNK_ROWS = 2_000_000  # decomposition rows read and evaluated at a time (whole entities)

# Per (group, metric, ts): how many peers have a residual_z, its median and its MAD, computed as
# pandas' group median does (the middle value, or (a + b) / 2 of the two middle ones), so that the
# rules evaluated a chunk of entities at a time see the same robust z as over the whole fleet.
_PEER_FIGURES_SQL = """
WITH d AS (
    SELECT g.grp, x.metric, x.ts, x.residual_z AS z
    FROM features.decomposition x JOIN _alert_peer_groups g ON x.entity_id = g.entity_id
    WHERE x.ts >= ? AND x.ts < ? AND x.residual_z IS NOT NULL AND NOT isnan(x.residual_z)),
m AS (
    SELECT grp, metric, ts, count(*) AS n, list_sort(list(z)) AS zs FROM d GROUP BY grp, metric, ts),
med AS (
    SELECT grp, metric, ts, n, zs,
           CASE WHEN n % 2 = 1 THEN zs[n // 2 + 1] ELSE (zs[n // 2] + zs[n // 2 + 1]) / 2 END AS median
    FROM m),
dev AS (  -- each group's deviations from its median, from the group's own list (no second pass)
    SELECT grp, metric, ts, n, median,
           list_sort(list_filter(list_transform(zs, lambda z: abs(z - median)), lambda v: NOT isnan(v))) AS vs
    FROM med)
SELECT grp AS "group", metric, ts, n, median,
       CASE WHEN len(vs) = 0 THEN NULL WHEN len(vs) % 2 = 1 THEN vs[len(vs) // 2 + 1]
            ELSE (vs[len(vs) // 2] + vs[len(vs) // 2 + 1]) / 2 END AS mad
FROM dev
"""


def peer_figures(con, lo, end, groups: pd.Series) -> pd.DataFrame:
    """group, metric, ts, n, median, mad of features.decomposition's residual_z in [lo, end) for the
    peer groups ``groups`` (entity_id -> group; None: none)."""
    frame = pd.DataFrame({"entity_id": groups.index.astype(str), "grp": groups.to_numpy(object)}).dropna()
    con.register("_alert_peer_groups", frame)
    try:
        return _frame(con, _PEER_FIGURES_SQL, [lo, end])
    finally:
        con.unregister("_alert_peer_groups")


def _frame(con, sql: str, params: list) -> pd.DataFrame:
    """The query's rows as pandas by way of Arrow: ``.df()`` builds the frame from NumPy objects
    and takes several times as long on millions of strings. The same values; the dtypes differ
    only where ``.df()`` picks pandas' nullable ones for a BOOLEAN or INTEGER holding NULL (object
    and float64 here), or object for text when there are no rows (str here)."""
    return con.sql(sql, params=params).to_arrow_table().to_pandas()


def _entity_bounds(con, lo, end, chunk_rows: int) -> list[tuple[Optional[str], Optional[str]]]:
    """[first, next first) entity_id bounds of chunks of ~chunk_rows decomposition rows; the first
    and last are open so that every entity (even one without decomposition rows) is in one."""
    ranges = wh.entity_ranges(con, wh.DECOMPOSITION, lo, end, chunk_rows)
    # a NULL entity_id (which the contract forbids) starts no bound: the bounds stay disjoint
    firsts = [first for first, _ in ranges if first is not None]
    return list(zip([None, *firsts[1:]], [*firsts[1:], None])) or [(None, None)]


def _read_inputs(con, start, end, fam, entities, bounds=(None, None), figures=None,
                 context: Optional[dict] = None, lookback: pd.Timedelta = LOOKBACK,
                 history: tuple[pd.Timedelta, list[str]] | None = None) -> core.RuleInputs:
    """The rules' inputs for ``[start - lookback, end)``; with ``history`` = (reach, metrics), those
    metrics' decomposition from ``start - reach`` (business rules' baselines and recurrences)."""
    lo = start - lookback
    where, params = "ts >= ? AND ts < ?", [lo, end]
    if bounds[0] is not None:
        where, params = where + " AND entity_id >= ?", params + [bounds[0]]
    if bounds[1] is not None:
        where, params = where + " AND entity_id < ?", params + [bounds[1]]
    q = lambda sql: _frame(con, sql + " WHERE " + where, params)  # noqa: E731
    cols = "SELECT entity_id, metric, ts, value, expected, residual, residual_z FROM features.decomposition"
    if history and history[1] and history[0] > lookback:
        older = where.replace("ts >= ? AND ts < ?", "ts >= ? AND ts < ? AND metric IN (" + ", ".join("?" * len(history[1])) + ")")
        dec = _frame(con, f"{cols} WHERE {older} UNION ALL {cols} WHERE {where}",
                     [start - history[0], lo, *history[1], *params[2:], *params])
    else:
        dec = q(cols)
    return core.RuleInputs(
        scores=q("SELECT entity_id, ts, anomaly_score, is_anomaly, severity FROM scoring.anomaly_scores"),
        explanations=q("SELECT entity_id, ts, metric, rank, contribution, family, expected, actual "
                       "FROM scoring.explanations"),
        decomposition=dec,
        entities=entities, families=fam.families, units=fam.units, peer_figures=figures,
        kinds=fam.kinds, **(context or {}),
    )


def _in_bounds(ids: pd.Series, bounds) -> pd.Series:
    first, stop = bounds
    keep = pd.Series(True, index=ids.index)
    if first is not None:
        keep &= ids >= first
    if stop is not None:
        keep &= ids < stop
    return keep


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The parts as one frame, each column's dtype as if built at once (a part whose column holds only
    None would otherwise turn a text column into object)."""
    full = [p for p in parts if len(p)] or parts[:1]
    out = pd.concat(full, ignore_index=True)
    for c in out.columns:
        if len({str(p[c].dtype) for p in full}) > 1:
            out[c] = pd.Series(out[c].tolist(), index=out.index)
    return out


def build_alerts(con, cfg: AlertRules, start, end, fam, entities,
                 chunk_rows: Optional[int] = None, context: Optional[dict] = None,
                 ) -> tuple[pd.DataFrame, list[str], pd.DataFrame]:
    """(rows to upsert, alert ids to delete, hits) for the days [start, end). Reads only.

    The rules are per entity except the peer comparisons: a fleet larger than ``chunk_rows``
    decomposition rows is evaluated a chunk of entities at a time, with the peers' figures computed
    beforehand over the whole fleet (in DuckDB), so memory follows the chunk and the alerts are the
    same.
    """
    wh.ensure_tables(con, (wh.ALERTS, wh.ALERT_EVENTS))
    lookback = window_lookback(cfg)
    lo = start - lookback
    far = rule_lookback(cfg)
    history = None
    if far > lookback:  # only the metrics business rules judge are read that far back
        names = con.execute("SELECT DISTINCT metric FROM features.decomposition WHERE ts >= ? AND ts < ?",
                            [lo, end]).df()["metric"].tolist()
        history = (far, history_metrics(cfg, names, fam.kinds))
    chunks = _entity_bounds(con, lo, end, chunk_rows or CHUNK_ROWS)
    figures = None
    if len(chunks) > 1:
        # only entities with decomposition rows count in the peers' figures (peer_figures joins them)
        ids = con.execute("SELECT DISTINCT entity_id FROM features.decomposition WHERE ts >= ? AND ts < ?",
                          [lo, end]).df()["entity_id"]
        info = core.entity_info(entities, sorted(ids))
        peer_bys = {"site"} | {r.peer_by for r in cfg.active if r.type == "fleet_outlier"}
        figures = {p: peer_figures(con, lo, end, core.peer_groups(info, p)) for p in sorted(peer_bys)}
    clock = con.execute("SELECT max(ts) FROM scoring.anomaly_scores").fetchone()[0]
    clock = pd.Timestamp(clock) if clock is not None else end
    reach = max([cfg.resolve_after(r) + cfg.cooldown(r) for r in cfg.rules], default=dt.timedelta(0))

    stored = con.execute("SELECT * FROM alerts.alerts WHERE last_seen_at >= ? OR status NOT IN ('resolved', 'expired')",
                         [start - reach]).df()
    ev = life.events(con)
    human = life.human_states(ev)
    feedback = life.feedback_counts(con)
    in_range = (stored["opened_at"] >= start) & (stored["opened_at"] < end)
    owned = stored["alert_id"].isin(list(human)) | (stored["last_seen_at"] >= end)
    prior = stored[(stored["opened_at"] < start) | (in_range & owned)]
    rebuilt = stored[in_range & ~owned]["alert_id"].tolist()  # opened in these days, nobody else's: rebuilt

    all_hits, parts = [], []
    for bounds in chunks:
        inputs = _read_inputs(con, start, end, fam, entities, bounds, figures, context, lookback, history)
        hits = core.find_hits(cfg, inputs, start, end)
        folded = core.fold_alerts(hits, cfg, prior=prior[_in_bounds(prior["entity_id"], bounds)], human=human)
        parts.append(core.alert_rows(folded, cfg, inputs, clock, feedback))
        all_hits.append(hits)
        del inputs
    hits = all_hits[0]
    if len(all_hits) > 1:
        hits = _concat(all_hits).sort_values(["entity_id", "rule", "ts"], kind="stable").reset_index(drop=True)
    rows = parts[0]
    if len(parts) > 1:  # as one fold over the whole fleet orders them: by rule and entity, then in time
        rows = _concat(parts).sort_values(["rule", "entity_id"], kind="stable").reset_index(drop=True)
    # alerts not hit in these days still resolve as the data clock moves on
    others = stored[stored["status"].isin(["open", "acknowledged", "pending"]) & ~stored["alert_id"].isin(rows["alert_id"])
                    & ~stored["alert_id"].isin(rebuilt)]
    resolved = core.apply_clock(others, cfg, clock, [a for a, s in human.items() if s == "resolved"])
    changed = resolved[resolved["status"] != others["status"]]
    rows = pd.concat([rows, changed[rows.columns]], ignore_index=True) if len(changed) else rows
    return rows, rebuilt, hits


def _respect_people(con, rows: pd.DataFrame) -> pd.DataFrame:
    """Inside the write transaction: what people did since the read wins over the computed status."""
    human = life.human_states(life.events(con))
    if not len(rows):
        return rows
    rows = rows.copy()
    for i, aid in zip(rows.index, rows["alert_id"]):
        state = human.get(aid)
        if state == "resolved" and rows.at[i, "status"] != "resolved":
            stored = con.execute("SELECT status, resolved_at FROM alerts.alerts WHERE alert_id = ?", [aid]).fetchone()
            rows.at[i, "status"] = "resolved"
            if stored:
                rows.at[i, "resolved_at"] = stored[1]
        elif state == "acknowledged" and rows.at[i, "status"] in ("open", "pending"):
            rows.at[i, "status"] = "acknowledged"
    return rows


@daily_table_asset(wh.ALERTS, group="alerts",
                   deps=[["scoring", "anomaly_scores"], ["scoring", "explanations"], ["features", "decomposition"]],
                   description=wh.ALERTS.doc + " Rules, routing and timing in configs/alert_rules.yaml.")
def alerts(context: dg.AssetExecutionContext, duckdb: DuckDBResource, alert_rules: AlertRulebook,
           catalog: MetricCatalog) -> dg.MaterializeResult:
    start, end = time_window(context)
    cfg, fam, entities = alert_rules.load(), catalog.load(), alert_rules.entity_frame()
    with duckdb.get_connection() as con:
        ids = con.execute("SELECT DISTINCT entity_id FROM features.decomposition WHERE ts >= ? AND ts < ?",
                          [start - rule_lookback(cfg), end]).df()["entity_id"]
        context = {"attributes": alert_rules.attributes(),
                   "events": alert_rules.events(list(ids), start - rule_lookback(cfg), end)}
        rows, rebuilt, hits = build_alerts(con, cfg, start, end, fam, entities, context=context)
    with duckdb.get_connection() as con, wh.transaction(con):
        wh.ensure_tables(con, (wh.ALERTS, wh.ALERT_EVENTS))
        rows = _respect_people(con, rows)
        wh.replace_keyed(con, wh.ALERTS, rows, "alert_id", sorted(set(rebuilt) | set(rows["alert_id"])))
    new = rows[(rows["opened_at"] >= start) & (rows["opened_at"] < end)] if len(rows) else rows
    md = table_metadata(wh.ALERTS, rows)
    md.update({
        "partition_range": f"{start.date()} .. {(end - DAY).date()}",
        "rule_hits": len(hits), "alerts_written": len(rows), "opened": len(new),
        "by_team": json.dumps(rows["team"].value_counts().to_dict()) if len(rows) else "{}",
        "by_status": json.dumps(rows["status"].value_counts().to_dict()) if len(rows) else "{}",
        "preview": markdown_preview(rows.sort_values(["severity", "confidence"], ascending=[True, False])[
            ["alert_id", "entity_id", "rule", "severity", "team", "confidence", "status", "why"]] if len(rows) else rows),
    })
    return dg.MaterializeResult(metadata=md)


# ------------------------------------------------------------------------------------------------
# precision of alerts, from feedback and from labels
# ------------------------------------------------------------------------------------------------
def _total(x: pd.Series):
    """Sum of the amounts given (None when none is: no business rule, or nothing reported)."""
    v = pd.to_numeric(x, errors="coerce").dropna()
    return float(v.sum()) if len(v) else None


def alert_precision_rows(alerts_df: pd.DataFrame, ev: pd.DataFrame, labels: pd.DataFrame | None, now) -> pd.DataFrame:
    a = alerts_df.copy()
    v = life.latest_verdicts(ev) if len(ev) else pd.DataFrame(columns=["alert_id", "verdict"])
    a = a.merge(v, on="alert_id", how="left")
    a = a.merge(life.recovered_values(ev), on="alert_id", how="left") if len(ev) else a.assign(value_recovered=None)
    if "value_at_risk" not in a.columns:
        a["value_at_risk"] = None
    if labels is not None and len(labels):
        lab = labels[["entity_id", "start", "end"]]
        m = a[["alert_id", "entity_id", "opened_at", "last_seen_at"]].merge(lab, on="entity_id")
        hit = m[(m["opened_at"] <= m["end"]) & (m["last_seen_at"] >= m["start"])]["alert_id"].unique()
        a["label_true"] = a["alert_id"].isin(hit)
    else:
        a["label_true"] = pd.NA
    out = []
    for rule, team, g in ([("*", "*", a)] + [(r, "*", g) for r, g in a.groupby("rule")]
                          + [("*", t, g) for t, g in a.groupby("team")]):
        tp = int((g["verdict"] == "true_positive").sum())
        fp = int((g["verdict"] == "false_positive").sum())
        out.append({"rule": rule, "team": team, "alerts": len(g), "with_feedback": tp + fp,
                    "true_positives": tp, "false_positives": fp,
                    "feedback_precision": tp / (tp + fp) if tp + fp else None,
                    "label_precision": float(g["label_true"].astype(float).mean()) if labels is not None and len(g) else None,
                    "evaluated_at": now, "value_at_risk": _total(g["value_at_risk"]),
                    "value_recovered": _total(g["value_recovered"])})
    return pd.DataFrame(out, columns=wh.ALERT_PRECISION.column_names)


@dg.asset(
    key=["evaluation", "alert_precision"], deps=[dg.AssetKey(["alerts", "alerts"])], group_name="evaluation",
    kinds={"duckdb", "python"}, pool=WRITER_POOL,
    description=wh.ALERT_PRECISION.doc + " An alert overlapping a labeled window of its entity counts as true.",
    metadata={"dagster/column_schema": column_schema(wh.ALERT_PRECISION)},
)
def alert_precision(context: dg.AssetExecutionContext, duckdb: DuckDBResource, landing: LandingFolder) -> dg.MaterializeResult:
    labels = read_labels(Path(landing.labels)) if landing.labels else None
    with duckdb.get_connection() as con:
        wh.ensure_tables(con, (wh.ALERTS, wh.ALERT_EVENTS))
        a = con.execute("SELECT alert_id, rule, team, entity_id, opened_at, last_seen_at, value_at_risk FROM alerts.alerts "
                        "WHERE status NOT IN ('pending', 'expired')").df()  # alerts people were shown
        ev = life.events(con)
    rows = alert_precision_rows(a, ev, labels, dt.datetime.now(dt.timezone.utc))
    with duckdb.get_connection() as con, wh.transaction(con):
        wh.ensure_tables(con, (wh.ALERT_PRECISION,))
        wh.replace_all(con, wh.ALERT_PRECISION, rows)
    overall = rows.iloc[0] if len(rows) else None
    md = {"dagster/row_count": len(rows), "by_rule_and_team": markdown_preview(rows, 50)}
    if overall is not None:
        for c in ("alerts", "with_feedback", "feedback_precision", "label_precision"):
            x = overall[c]
            md[c] = None if x is None or pd.isna(x) else float(x)
    return dg.MaterializeResult(metadata=md)


# ------------------------------------------------------------------------------------------------
# delivery
# ------------------------------------------------------------------------------------------------
@dg.sensor(
    name="alert_delivery", minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING if life.any_webhook_configured() else dg.DefaultSensorStatus.STOPPED,
    description="Posts new and escalated alerts to the team webhooks (ANOMALY_ALERT_WEBHOOK_URL[_<TEAM>]), "
                "Slack-compatible; deliveries are recorded in alerts.alert_events so nothing is sent twice.",
)
def alert_delivery(context: dg.SensorEvaluationContext, duckdb: DuckDBResource):
    import duckdb as duckdb_module

    if not life.any_webhook_configured():
        return dg.SkipReason(f"no webhook configured (set {life.WEBHOOK_ENV} or {life.WEBHOOK_ENV}_<TEAM>)")
    try:
        report = life.deliver(duckdb.database, log=context.log)
    except duckdb_module.IOException as e:  # a run holds the warehouse: next tick
        return dg.SkipReason(f"warehouse busy, retrying next tick ({type(e).__name__})")
    return dg.SkipReason(f"alerts: {report}")
