"""The rule conditions: one function per rule type, each giving the hits of its rule in ``[start, end)``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from anomaly_assets.alert_config import AlertRules
from anomaly_assets.core.rules.inputs import (
    HIT_COLUMNS, RuleInputs, _empty_hits, _flagged, _floors, _margin, _run_lengths, _series_code, _top_of_point, _us,
    map_distinct,
)
from anomaly_assets.core.rules.peers import peer_stats


def burst_hits(rule, inputs: RuleInputs, start, end) -> pd.DataFrame:
    f = _flagged(inputs, rule.min_severity).sort_values(["entity_id", "ts"])
    if f.empty:
        return _empty_hits()
    t = _us(f["ts"])
    within = int(rule.within.total_seconds() * 1e6)
    first = np.empty(len(f), np.int64)
    bounds = np.r_[0, np.flatnonzero(f["entity_id"].to_numpy()[1:] != f["entity_id"].to_numpy()[:-1]) + 1, len(f)]
    for a, b in zip(bounds[:-1], bounds[1:]):  # per entity (flagged points are few)
        first[a:b] = a + np.searchsorted(t[a:b], t[a:b] - within, side="left")
    count = np.arange(len(f)) - first + 1
    since = f["ts"].to_numpy()[first]
    out = f.assign(measure=count.astype(float), since=since)
    out = out[(out["measure"] >= rule.count) & (out["ts"] >= start) & (out["ts"] < end)]
    out = out.merge(_top_of_point(inputs), on=["entity_id", "ts"], how="left")
    out["margin"] = _margin(out["measure"], rule.count)
    out["rule"] = rule.name
    out["score_severity"] = out["severity"]
    return out[HIT_COLUMNS]


def dominant_family_hits(rule, inputs: RuleInputs, cfg: AlertRules, start, end) -> pd.DataFrame:
    e = inputs.explanations
    if e.empty:
        return _empty_hits()
    e = e[(e["ts"] >= start) & (e["ts"] < end)]
    flagged = _flagged(inputs)[["entity_id", "ts", "severity"]]
    e = e.merge(flagged, on=["entity_id", "ts"])
    if e.empty:
        return _empty_hits()
    share = e.pivot_table(index=["entity_id", "ts"], columns="family", values="contribution",
                          aggfunc="sum", fill_value=0.0)
    share = share.reindex(columns=sorted(set(share.columns) | set(rule.families)), fill_value=0.0)
    mine = share[rule.families]
    total, each = mine.sum(axis=1), mine.min(axis=1)
    ours = e[e["family"].isin(rule.families)].copy()
    floors = _floors(cfg, rule, ours["metric"], ours["family"])
    ours["material"] = (ours["actual"] - ours["expected"]).abs().to_numpy(float) >= floors
    material = ours.groupby(["entity_id", "ts"])["material"].any().reindex(share.index, fill_value=False)
    # the hit's metric: the rule families' best-ranked metric; its sign is the direction
    lead = ours.sort_values("rank").drop_duplicates(["entity_id", "ts"]).set_index(["entity_id", "ts"])
    sign = np.sign(lead["actual"] - lead["expected"]).reindex(share.index, fill_value=0.0)
    ok = (total >= rule.min_share) & (each >= rule.min_each) & material
    if rule.direction != "either":
        ok &= sign == (1.0 if rule.direction == "above" else -1.0)
    if not ok.any():
        return _empty_hits()
    idx = ok[ok].index
    out = pd.DataFrame({"measure": total[idx].to_numpy(), "metric": lead["metric"].reindex(idx).to_numpy(),
                        "family": lead["family"].reindex(idx).to_numpy()}, index=idx).reset_index()
    out = out.merge(flagged, on=["entity_id", "ts"])
    span = 1.0 - rule.min_share
    out["margin"] = np.clip((out["measure"] - rule.min_share) / span, 0, 1) if span > 0 else 1.0
    out["since"] = out["ts"]
    out["rule"] = rule.name
    out["score_severity"] = out["severity"]
    return out[HIT_COLUMNS]


def _select_series(dec: pd.DataFrame, metrics, families) -> pd.DataFrame:
    if metrics:
        dec = dec[dec["metric"].isin(metrics)]
    if families:
        dec = dec[dec["family"].isin(families)]
    return dec


def _score_severity(inputs: RuleInputs, hits: pd.DataFrame) -> pd.Series:
    s = inputs.scores[["entity_id", "ts", "severity"]]
    return hits[["entity_id", "ts"]].merge(s, on=["entity_id", "ts"], how="left")["severity"].fillna("normal").to_numpy()


def _one_per_point(h: pd.DataFrame, by: str) -> pd.DataFrame:
    """Several metrics may hold at one (entity, ts): keep the strongest (ties: metric name)."""
    return (h.sort_values(["entity_id", "ts", by, "metric"], ascending=[True, True, False, True])
             .drop_duplicates(["entity_id", "ts"]))


def sustained_hits(rule, inputs: RuleInputs, cfg: AlertRules, start, end) -> pd.DataFrame:
    d = _select_series(inputs.decomposition, rule.metrics, rule.families)
    if rule.condition == "stuck":
        # only a sensor can be stuck: a count that is often 0, a price or a stock level that does
        # not move is the business, not the instrument (core/semantics.py)
        d = d[map_distinct(d["metric"], inputs.metric_kind).eq("sensor").to_numpy()]
    if d.empty:
        return _empty_hits()
    code = _series_code(d)
    value = d["value"].to_numpy(float)
    if rule.condition == "stuck":
        prev = np.r_[np.nan, value[:-1]]
        new_series = np.r_[True, code[1:] != code[:-1]]
        same = (np.abs(value - prev) <= rule.tolerance) & ~new_series
        run = _run_lengths(same, code) + 1  # identical values = identical steps + 1
        run = np.where(same, run, 1)
        # the metric must normally move: most steps before the run changed the value
        moved = (~same & ~new_series).astype(np.int64)
        steps = (~new_series).astype(np.int64)
        starts = np.r_[0, np.flatnonzero(new_series[1:]) + 1]
        seg = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(d)]))
        cm = np.cumsum(moved) - np.r_[0, np.cumsum(moved)][starts][seg]
        cs = np.cumsum(steps) - np.r_[0, np.cumsum(steps)][starts][seg]
        before = np.arange(len(d)) - (run - 1)  # row where the run began
        moving = np.where(cs[before] > 0, cm[before] / np.maximum(cs[before], 1), 0.0)
        hold = (run >= rule.periods) & (moving >= 0.5) & (cs[before] >= rule.periods)
    else:
        dev = value - d["expected"].to_numpy(float)
        rz = d["residual_z"].to_numpy(float)
        floors = _floors(cfg, rule, d["metric"], d["family"])
        with np.errstate(invalid="ignore"):
            if rule.direction == "above":
                cond = (dev >= floors) & (rz >= rule.min_z)
            elif rule.direction == "below":
                cond = (dev <= -floors) & (rz <= -rule.min_z)
            else:
                cond = (np.abs(dev) >= floors) & (np.abs(rz) >= rule.min_z)
        cond &= np.isfinite(dev)
        run = _run_lengths(cond, code)
        hold = run >= rule.periods
    return _run_hits(d, run, hold, run.astype(float), rule.periods, rule, inputs, start, end)


def _run_hits(rows, run, hold, measure, reference, rule, inputs: RuleInputs, start, end) -> pd.DataFrame:
    """Hits at the rows of ``[start, end)`` where a run of ``run`` consecutive points ``hold``s:
    one per (entity, ts), the strongest ``measure``; ``since`` is where the run began and the
    margin is ``measure`` against the rule's ``reference``."""
    since = rows["ts"].array.take(np.arange(len(rows)) - np.maximum(run - 1, 0))  # tz-aware, no objects
    h = rows.assign(measure=measure, since=since)[hold]
    h = h[(h["ts"] >= start) & (h["ts"] < end)]
    if h.empty:
        return _empty_hits()
    h = _one_per_point(h, "measure")
    h["margin"] = _margin(h["measure"], reference)
    h["rule"] = rule.name
    h["score_severity"] = _score_severity(inputs, h)
    return h[HIT_COLUMNS]

def fleet_outlier_hits(rule, inputs: RuleInputs, cfg: AlertRules, start, end, peers=None) -> pd.DataFrame:
    p = peers if peers is not None else peer_stats(inputs, rule.peer_by)
    p = _select_series(p, rule.metrics, rule.families)
    if rule.kinds:
        p = p[map_distinct(p["metric"], inputs.metric_kind).isin(rule.kinds).to_numpy()]
    if p.empty:
        return _empty_hits()
    floors = _floors(cfg, rule, p["metric"], p["family"])
    cond = ((p["robust_z"].abs().to_numpy() >= rule.z) & (p["peers"].to_numpy() >= rule.min_peers)
            & (p["residual"].abs().to_numpy() >= floors))
    run = _run_lengths(cond, _series_code(p))
    return _run_hits(p, run, run >= rule.periods, p["robust_z"].abs(), rule.z, rule, inputs, start, end)


