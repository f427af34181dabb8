"""From hits to alerts: severity, routing, confidence, dedup over time, and the data clock."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from anomaly_assets.alert_config import SEVERITY_RANK, AlertRules
from anomaly_assets.core.rules.inputs import _K_PRIOR


def hit_severity(rule, measure: float, score_severity: str | None) -> str:
    """The rule's severity mapping applied to one hit."""
    sev = rule.severity
    if isinstance(sev, str) and sev != "from_scores":
        return sev
    if sev == "from_scores":
        return "critical" if score_severity == "critical" else "warning"
    if measure >= sev.critical:
        return "critical"
    return "warning" if measure >= sev.warning else "info"


def route(cfg: AlertRules, rule, *, fault_kind=None, family=None, tags=(), site=None, entity_team=None) -> str:
    """Team for an alert: the rule's own team, else the first matching route, else the entity's
    team, else the default team."""
    if rule.team:
        return rule.team
    for r in cfg.routing.routes:
        if ((r.fault_kind is None or r.fault_kind == fault_kind) and (r.family is None or r.family == family)
                and (r.tag is None or r.tag in tags) and (r.site is None or r.site == site)
                and (r.rule is None or r.rule == rule.name)):
            return r.team
    return entity_team or cfg.routing.default_team


def team_for_fault_kind(cfg: AlertRules, fault_kind: str) -> str:
    """The team routing gives an alert diagnosed ``fault_kind`` (no rule team, tag or site)."""
    for r in cfg.routing.routes:
        if r.fault_kind == fault_kind and r.family is None and r.tag is None and r.site is None and r.rule is None:
            return r.team
    return cfg.routing.default_team


def rule_precision(cfg: AlertRules, rule, feedback: Mapping[str, tuple[int, int]] | None) -> float:
    tp, fp = (feedback or {}).get(rule.name, (0, 0))
    return (tp + _K_PRIOR * cfg.prior(rule)) / (tp + fp + _K_PRIOR)


def confidence(p_rule: float, margin: float, hits: int) -> float:
    support = 1.0 - math.exp(-hits / 3.0)
    strength = 0.5 * float(np.clip(margin, 0, 1)) + 0.5 * support
    return round(p_rule * (0.5 + 0.5 * strength), 3)


def alert_id(rule: str, entity_id: str, opened_at: pd.Timestamp) -> str:
    stamp = pd.Timestamp(opened_at).tz_convert("UTC").isoformat()
    return hashlib.sha256(f"{rule}|{entity_id}|{stamp}".encode()).hexdigest()[:16]


def _diagnose(hits: pd.DataFrame, cfg: AlertRules) -> pd.Series:
    """Fault kind per hit: the rule's own, else the latest diagnosis hit (a rule with a fault_kind)
    of the same entity no more than that rule's resolve_after earlier (causal: never a later one)."""
    kinds = {r.name: r.fault_kind for r in cfg.rules}
    own = hits["rule"].map(kinds)
    diag = hits[own.notna()].assign(fault_kind=own[own.notna()])
    if diag.empty or own.notna().all():
        return own
    tol = pd.Timedelta(max((cfg.resolve_after(r) for r in cfg.rules if r.fault_kind), default=pd.Timedelta(0)))
    left = hits[own.isna()][["entity_id", "ts"]].reset_index().sort_values("ts", kind="stable")
    # diagnoses at the same time: a fixed order (by fault kind), whatever order the hits came in,
    # so a run over one day and a run over a range pick the same one
    right = diag[["entity_id", "ts", "fault_kind"]].sort_values(["ts", "fault_kind"], kind="stable")
    m = pd.merge_asof(left, right, on="ts", by="entity_id", direction="backward", tolerance=tol)
    out = own.copy()
    out.loc[m["index"].to_numpy()] = m["fault_kind"].to_numpy()
    return out


# ------------------------------------------------------------------------------------------------
# folding hits into alerts
# ------------------------------------------------------------------------------------------------
@dataclass
class _Alert:
    rule: str
    entity_id: str
    opened_at: pd.Timestamp
    last_seen_at: pd.Timestamp
    severity: str
    hits: int
    peak: dict  # the hit with the highest severity, then measure, then latest
    frozen: bool = False  # resolved by a person: absorbs hits up to last_seen_at, never changes
    acknowledged: bool = False
    stored: dict | None = None  # the row as stored, for alerts a later partition or a person owns
    fault_kind: str | None = None
    value_at_risk: float = float("nan")  # money at stake over the alert's hits (business rules)

    @property
    def id(self) -> str:
        return alert_id(self.rule, self.entity_id, self.opened_at)

    @property
    def kept_as_stored(self) -> bool:
        """Owned by a person (resolved) or by a later run (stored with hits after the ones seen here)."""
        return self.stored is not None and (self.frozen or pd.Timestamp(self.stored["last_seen_at"]) >= self.last_seen_at)


def _float(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def _add_value(total: float, hit: Mapping, window: int) -> float:
    """The alert's money at stake after one more hit: the first hit counts its whole window, each
    later one the reading it adds (its window's value / window: consecutive windows overlap)."""
    v = _float(hit.get("value_at_risk"))
    if not math.isfinite(v):
        return total
    return v if not math.isfinite(total) else total + v / max(int(window), 1)


def _peak_key(h: Mapping) -> tuple:
    return (SEVERITY_RANK[h["severity"]], h["measure"], h["ts"])


def _from_row(row: Mapping, human: Mapping[str, str]) -> _Alert:
    ev = row.get("evidence")
    ev = json.loads(ev) if isinstance(ev, str) else (ev or {})
    status = human.get(row["alert_id"])
    a = _Alert(row["rule"], row["entity_id"], pd.Timestamp(row["opened_at"]), pd.Timestamp(row["last_seen_at"]),
               row["severity"], int(row.get("hits") or 1), ev.get("_peak") or {}, frozen=status == "resolved",
               acknowledged=status == "acknowledged", stored=dict(row), fault_kind=row.get("fault_kind"),
               value_at_risk=_float(row.get("value_at_risk")))
    if a.peak:
        a.peak = {**a.peak, "ts": pd.Timestamp(a.peak["ts"]), "since": pd.Timestamp(a.peak["since"])}
    return a


def fold_alerts(
    hits: pd.DataFrame,
    cfg: AlertRules,
    *,
    prior: pd.DataFrame | None = None,
    human: Mapping[str, str] | None = None,
) -> list[_Alert]:
    """Fold hits (time order per rule and entity) into alerts, continuing ``prior`` ones.

    ``prior``: stored alerts that may continue (rows of the alerts table), at most one per rule and
    entity is continued: the latest opened. ``human``: alert_id -> 'acknowledged' | 'resolved'.
    Returns every alert touched (continued, reopened or opened).
    """
    human = human or {}
    rules = {r.name: r for r in cfg.rules}
    current: dict[tuple[str, str], _Alert] = {}
    touched: dict[str, _Alert] = {}
    if prior is not None and len(prior):
        for row in prior.sort_values("opened_at").to_dict("records"):
            if row["rule"] in rules:
                current[(row["rule"], row["entity_id"])] = _from_row(row, human)
    if hits.empty:
        return []
    kinds = _diagnose(hits, cfg)
    hits = hits.assign(fault_kind=[k if isinstance(k, str) else None for k in kinds])
    for h in hits.sort_values(["rule", "entity_id", "ts"], kind="stable").to_dict("records"):
        rule = rules[h["rule"]]
        h["fault_kind"] = h["fault_kind"] if isinstance(h["fault_kind"], str) else None
        h["severity"] = hit_severity(rule, h["measure"], h["score_severity"])
        key = (h["rule"], h["entity_id"])
        cur = current.get(key)
        if cur is not None:
            if h["ts"] <= cur.last_seen_at and (cur.frozen or cur.stored is not None):
                touched.setdefault(cur.id, cur)  # already part of it (a person or a later run owns it)
                continue
            gap = h["ts"] - cur.last_seen_at
            if not cur.frozen and gap <= pd.Timedelta(cfg.resolve_after(rule) + cfg.cooldown(rule)):
                cur.last_seen_at = max(cur.last_seen_at, h["ts"])
                cur.hits += 1
                if SEVERITY_RANK[h["severity"]] > SEVERITY_RANK[cur.severity]:
                    cur.severity = h["severity"]
                if not cur.peak or _peak_key(h) >= _peak_key(cur.peak):
                    cur.peak = h
                cur.fault_kind = cur.fault_kind or h["fault_kind"]
                cur.value_at_risk = _add_value(cur.value_at_risk, h, getattr(rule, "window", 1))
                touched[cur.id] = cur
                continue
        a = _Alert(h["rule"], h["entity_id"], h["ts"], h["ts"], h["severity"], 1, h, fault_kind=h["fault_kind"],
                   value_at_risk=_float(h.get("value_at_risk")))
        state = human.get(a.id)
        a.frozen, a.acknowledged = state == "resolved", state == "acknowledged"
        current[key] = a
        touched[a.id] = a
    return list(touched.values())


def apply_clock(alerts: pd.DataFrame, cfg: AlertRules, clock: pd.Timestamp, human_resolved=()) -> pd.DataFrame:
    """Resolve open/acknowledged alerts whose last hit is more than resolve_after before ``clock``;
    pending ones (fewer hits than the rule's min_hits) expire instead."""
    if alerts.empty:
        return alerts
    rules = {r.name: r for r in cfg.rules}
    alerts = alerts.copy()
    quiet = alerts["rule"].map(lambda r: pd.Timedelta(cfg.resolve_after(rules[r])) if r in rules
                               else pd.Timedelta(cfg.defaults.resolve_after))
    last = pd.to_datetime(alerts["last_seen_at"], utc=True)
    live = alerts["status"].isin(["open", "acknowledged", "pending"]) & ~alerts["alert_id"].isin(list(human_resolved))
    done = live & (pd.Timestamp(clock) - last > quiet)
    alerts.loc[done, "status"] = np.where(alerts.loc[done, "status"] == "pending", "expired", "resolved")
    alerts["resolved_at"] = pd.to_datetime(alerts["resolved_at"], utc=True)
    alerts.loc[done, "resolved_at"] = (last + quiet)[done]
    return alerts


