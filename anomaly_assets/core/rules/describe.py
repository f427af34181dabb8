"""Words for alerts: the title, the one-paragraph why, and the rows written to alerts.alerts."""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import pandas as pd

from anomaly_assets.alert_config import AlertRules
from anomaly_assets.core.rules.evidence import EvidenceBuilder, _clean, _num
from anomaly_assets.core.rules.folding import _Alert, apply_clock, confidence, route, rule_precision
from anomaly_assets.core.rules.inputs import ALERT_COLUMNS, AMOUNT_COLUMNS, RuleInputs
from anomaly_assets.core.semantics import fmt_pair, fmt_value


def _when(ts: pd.Timestamp) -> str:
    return pd.Timestamp(ts).tz_convert("UTC").strftime("%m-%d %H:%M")


def _day(ts: pd.Timestamp) -> str:
    """A day as people write it on daily data: '2026-02-11'; with the time when it is not midnight."""
    t = pd.Timestamp(ts).tz_convert("UTC")
    return t.strftime("%Y-%m-%d") if t == t.normalize() else t.strftime("%Y-%m-%d %H:%M")


def _change(actual, expected) -> str:
    """Relative change, for business metrics (a σ means little to the person reading it)."""
    if actual is None or expected is None or not expected:
        return ""
    return f" ({(actual - expected) / abs(expected):+.0%})"


def _business_head(a: _Alert, rule, metric: str, fmt, ev: EvidenceBuilder) -> list[str]:
    """The why's first parts for a ``business_gap`` alert: the totals over its window, the context
    that tells the faults apart, and the money at risk."""
    p = a.peak
    n = rule.window
    over = f"on {_day(p['ts'])}" if n == 1 else f"over {n} days to {_day(p['ts'])}"
    actual, expected = p.get("actual_total"), p.get("expected_total")
    parts = [f"{metric} {fmt(actual)} vs {fmt(expected)} expected {over}{_change(actual, expected)}"]
    if rule.after_gap:
        parts.append(f"the day before ({_day(p['since'] - pd.Timedelta(days=1))}) was missing")
    if rule.others:
        parts.append(f"{', '.join(rule.others)} held")
    level = p.get("stock_level")
    if rule.stock == "frozen" and level is not None and np.isfinite(level):
        parts.append(f"the system shows {level:,.0f} units on hand, unchanged since {_day(p['since'] - pd.Timedelta(days=1))}")
    peak_value, value = p.get("value_at_risk"), a.value_at_risk  # the alert's: every hit so far
    if value is not None and np.isfinite(value) and value > 0:
        kind = ev.inputs.metric_kind.get(metric, "sensor")
        gap = abs((expected or 0) - (actual or 0))
        price = peak_value / gap if gap and peak_value else None
        how = "" if kind == "currency" or not price else f" ({value / price:,.0f} units x {fmt_value(price, 'currency')})"
        parts.append(f"{fmt_value(value, 'currency')} at risk{how}")
    return parts


def _dur(td) -> str:
    s = pd.Timedelta(td).total_seconds()
    return f"{s / 86400:g} d" if s >= 86400 and s % 86400 == 0 else f"{s / 3600:g} h" if s >= 3600 else f"{s / 60:g} min"


def describe(a: _Alert, rule, cfg: AlertRules, ev: EvidenceBuilder) -> tuple[str, str, dict]:
    """(title, why, evidence) for an alert, from its peak hit."""
    p = a.peak
    units = ev.inputs.units
    point = ev.point(a.entity_id, p["ts"])
    metric = p.get("metric") if isinstance(p.get("metric"), str) else (point["top_metrics"][0]["metric"] if point["top_metrics"] else None)
    lead = next((t for t in point["top_metrics"] if t["metric"] == metric), None)
    if lead is None and metric is not None:
        rows = ev.rows(a.entity_id, p["ts"])
        r = rows[rows["metric"] == metric]
        if len(r):
            lead = {"metric": metric, "family": r["family"].iloc[0], "expected": _num(r["expected"].iloc[0]),
                    "actual": _num(r["value"].iloc[0]), "z": _num(r["residual_z"].iloc[0])}
    peers = ev.peer(a.entity_id, p["ts"], metric) if metric else None
    kind = ev.inputs.metric_kind.get(metric, "sensor") if metric else "sensor"

    unit = units.get(metric) if kind == "sensor" else None

    def fmt(x):  # a value in the metric's terms: $1,110, 12 units, 8.4%, 2.87 mm/s
        return fmt_value(x, kind, unit, metric or "")

    fam_share = point["family_shares"]
    head = None
    if rule.type == "business_gap":
        parts = _business_head(a, rule, metric, fmt, ev)
    elif rule.type == "burst":
        head = f"{int(p['measure'])} anomalous points within {_dur(rule.within)} (since {_when(p['since'])})"
    elif rule.type == "dominant_family":
        head = f"{'+'.join(rule.families)} {p['measure']:.0%} of the deviation"
    elif rule.type == "sustained_deviation" and rule.condition == "stuck":
        head = (f"{metric} stuck at {fmt(lead['actual']) if lead else '?'} for {int(p['measure'])} readings "
                f"since {_when(p['since'])} (it normally changes every reading)")
    elif rule.type == "sustained_deviation":
        word = {"above": "above", "below": "below", "either": "away from"}[rule.direction]
        head = f"{metric} {word} expected for {int(p['measure'])} consecutive readings since {_when(p['since'])}"
    else:
        head = (f"{metric} departs from its {peers['peers'] if peers else '?'} peers at "
                f"{peers['group'] if peers else '?'} (robust z {p['measure']:.1f})")
    if head is not None:
        parts = [head]
    if lead and lead.get("expected") is not None and rule.type != "business_gap":
        z = lead.get("z")
        change = (f" ({z:+.1f}σ)" if z is not None else "") if kind == "sensor" else _change(lead["actual"], lead["expected"])
        shown, wanted = fmt_pair(lead["actual"], lead["expected"], kind, unit, metric or "")
        parts.append(f"{lead['metric']} {shown} vs {wanted} expected{change}")
    if fam_share and rule.type not in ("dominant_family", "business_gap"):
        f, s = next(iter(fam_share.items()))
        parts.append(f"{f} family {s:.0%} of the deviation")
    if a.hits > 1:
        parts.append(f"{a.hits} hits since {_day(a.opened_at) if rule.type == 'business_gap' else _when(a.opened_at)}")
    if peers and rule.type not in ("fleet_outlier", "business_gap") and peers["robust_z"] is not None and peers["peers"]:
        parts.append(f"vs {peers['peers']} peers at {peers['group']}: robust z {peers['robust_z']:+.1f}")
    why = "; ".join(parts)
    if a.fault_kind:
        why += f". Likely {a.fault_kind.replace('_', ' ')}"
    action = rule.action or next((r.action for r in cfg.rules if r.fault_kind and r.fault_kind == a.fault_kind
                                  and r.action), None)  # a generic alert takes its diagnosis' action
    if action:
        why += f". {action}"
    title = f"{rule.title or rule.name.replace('_', ' ').capitalize()} on {a.entity_id}"
    evidence = {
        "rule_type": rule.type, "measure": _num(p["measure"]), "peak_ts": str(p["ts"]), "since": str(p["since"]),
        "metric": metric, "expected": lead.get("expected") if lead else None,
        "actual": lead.get("actual") if lead else None, "sigma": lead.get("z") if lead else None,
        "unit": units.get(metric) if metric else None,
        "top_metrics": point["top_metrics"], "family_shares": fam_share, "peers": peers,
        "detector": ev.score(a.entity_id, p["ts"]), "hits": a.hits, "fault_kind": a.fault_kind,
        "metric_kind": kind, "value_at_risk": _num(a.value_at_risk),
        **({"window": rule.window, "actual_total": _num(p.get("actual_total")),
            "expected_total": _num(p.get("expected_total")), "stock_level": _num(p.get("stock_level"))}
           if rule.type == "business_gap" else {}),
        # rounded: the same data gives the same bytes (sums over metrics may differ in the last bit)
        "_peak": {k: (str(v) if isinstance(v, pd.Timestamp) else _num(v) if isinstance(v, (float, np.floating)) else v)
                  for k, v in p.items()
                  if k in ("ts", "since", "measure", "margin", "metric", "family", "severity", "score_severity",
                           *AMOUNT_COLUMNS)},
    }
    return title, why, evidence


def alert_rows(
    alerts: list[_Alert],
    cfg: AlertRules,
    inputs: RuleInputs,
    clock: pd.Timestamp,
    feedback: Mapping[str, tuple[int, int]] | None = None,
) -> pd.DataFrame:
    """Table rows for folded alerts, with status as of the data ``clock``.

    Alerts owned by a person (resolved) or by a later run (``stored`` with last_seen_at after the
    hits seen here) are returned as stored, except that an open one may resolve as the clock moves.
    """
    rules = {r.name: r for r in cfg.rules}
    described = [a for a in alerts if not a.kept_as_stored]
    points = pd.DataFrame({"entity_id": [a.entity_id for a in described], "ts": [a.peak["ts"] for a in described]})
    ev = EvidenceBuilder(inputs, points) if described else None
    out = []
    for a in alerts:
        rule = rules[a.rule]
        if a.kept_as_stored:
            row = dict(a.stored)
            if a.frozen:
                row["status"] = "resolved"
            out.append(row)
            continue
        title, why, evidence = describe(a, rule, cfg, ev)
        info = inputs.entity_info.loc[a.entity_id] if a.entity_id in inputs.entity_info.index else None
        team = route(cfg, rule, fault_kind=a.fault_kind, family=a.peak.get("family"),
                     tags=info["tags"] if info is not None else (), site=info["site"] if info is not None else None,
                     entity_team=info["team"] if info is not None else None)
        conf = confidence(rule_precision(cfg, rule, feedback), a.peak.get("margin", 0.0), a.hits)
        out.append({
            "alert_id": a.id, "rule": a.rule, "entity_id": a.entity_id, "opened_at": a.opened_at,
            "last_seen_at": a.last_seen_at,
            "status": "acknowledged" if a.acknowledged else "open" if a.hits >= rule.min_hits else "pending",
            "severity": a.severity, "team": team, "confidence": conf, "title": title, "why": why,
            "evidence": json.dumps(_clean(evidence), default=str), "fault_kind": a.fault_kind,
            "family": a.peak.get("family") if isinstance(a.peak.get("family"), str) else None,
            "hits": a.hits, "resolved_at": pd.NaT,
            "value_at_risk": _num(a.value_at_risk),
        })
    df = pd.DataFrame(out, columns=ALERT_COLUMNS)
    return apply_clock(df, cfg, clock)


