"""Alert rules: from scores, explanations and the decomposition to alerts people can act on.

Pure pandas/numpy: frames in, frames out; nothing here reads or writes anything.

Two steps:

1. :func:`find_hits` evaluates every rule at every timestamp of ``[start, end)`` and returns one
   *hit* per rule, entity and timestamp where the rule's condition holds (earlier rows given in the
   inputs only fill the rules' windows):

   - ``burst``: at a flagged point, the entity has at least ``count`` flagged points in
     ``[ts - within, ts]`` (both ends inclusive). measure = that count.
   - ``dominant_family``: at a flagged point, the rule's families carry at least ``min_share`` of
     the deviation (each at least ``min_each``) and the largest of their metrics' |actual -
     expected| reaches the materiality floor. measure = the share.
   - ``sustained_deviation``: ``periods`` consecutive observations of one metric at least
     ``floor`` (metric units) and ``min_z`` (σ) above / below / away from expected; with
     ``condition: stuck``, ``periods`` identical values (within ``tolerance``) of a metric that
     changed at most steps before the run. measure = the run length (observations).
   - ``fleet_outlier``: the entity's ``residual_z`` departs from its peer group's (same site, or
     same tag) at the same timestamp: robust z = (rz - median) / (1.4826 MAD) over the group,
     at least ``z`` for ``periods`` consecutive observations, with at least ``min_peers`` peers
     and a material residual. measure = |robust z|.

2. :func:`fold_alerts` turns hits into alerts, one per rule and entity at a time (dedup): a hit
   within ``resolve_after`` of the alert's last hit continues it; within ``resolve_after +
   cooldown`` it reopens it (flapping does not page again); later, a new alert opens. An alert
   whose last hit is more than ``resolve_after`` before the data clock is resolved. ``alert_id``
   = hash(rule, entity, opened_at), so re-running the same data gives the same ids. What people
   did (acknowledge, resolve) is given as ``human`` and is never undone: a resolved alert stays
   resolved and absorbs hits up to its last_seen_at; later hits open a new alert. An alert with
   fewer hits than its rule's ``min_hits`` is ``pending`` (kept, not shown or sent) and ``expired``
   if it goes quiet so.

Confidence = p_rule x (0.5 + 0.5 x strength): p_rule is the rule's precision from feedback,
shrunk to its prior (``(tp + 5 prior) / (tp + fp + 5)``); strength averages how far the peak hit
cleared the rule's threshold (0 at the threshold, 1 at twice it) and how much support the alert
has (``1 - exp(-hits / 3)``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from anomaly_assets.alert_config import SEVERITY_RANK, AlertRules, infer_group
from anomaly_assets.core.explain import infer_family

HIT_COLUMNS = ["rule", "entity_id", "ts", "measure", "margin", "metric", "family", "since", "score_severity"]
ALERT_COLUMNS = ["alert_id", "rule", "entity_id", "opened_at", "last_seen_at", "status", "severity", "team",
                 "confidence", "title", "why", "evidence", "fault_kind", "family", "hits", "resolved_at"]
MAD_FLOOR = 0.5  # σ: peers that never move would otherwise make every wiggle an outlier
_K_PRIOR = 5.0  # pseudo-feedback behind a rule's prior precision


@dataclass
class RuleInputs:
    """What the rules read, all for ``[start - lookback, end)``.

    scores : entity_id, ts, anomaly_score, is_anomaly, severity
    explanations : entity_id, ts, metric, rank, contribution, family, expected, actual (flagged points)
    decomposition : entity_id, metric, ts, value, expected, residual, residual_z (every observation)
    entities : entity_id, site, tags (list of str), team — entities missing here get a site inferred
        from their id (pump-0007 -> pump) and no tags
    peer_figures : peer_by -> group, metric, ts, n, median, mad of residual_z (the pandas group median:
        middle value or mean of the two middle ones; mad: median of |residual_z - median|)
        computed over the whole fleet, when the rows here are only some entities of it (a chunk);
        default: computed from ``decomposition``
    """

    scores: pd.DataFrame
    explanations: pd.DataFrame
    decomposition: pd.DataFrame
    entities: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["entity_id", "site", "tags", "team"]))
    families: Mapping[str, str] = field(default_factory=dict)
    units: Mapping[str, str] = field(default_factory=dict)
    peer_figures: Mapping[str, pd.DataFrame] | None = None

    def __post_init__(self):
        self.scores = _utc(self.scores)
        self.explanations = _utc(self.explanations)
        dec = _utc(self.decomposition).copy()
        if "family" not in dec.columns:
            fam = {m: infer_family(m, self.families) for m in dec["metric"].unique()}
            dec["family"] = dec["metric"].map(fam)
        self.decomposition = dec
        ids = pd.concat([self.scores["entity_id"], dec["entity_id"]]).unique()
        self.entity_info = entity_info(self.entities, ids)
        if self.peer_figures is not None:
            self.peer_figures = {k: _utc(v) for k, v in self.peer_figures.items()}


def entity_info(entities: pd.DataFrame, ids) -> pd.DataFrame:
    """site, tags (tuple), team indexed by entity_id for ``ids``, from the register ``entities``
    (site inferred from the id when missing)."""
    ids = pd.Index(ids)
    ent = entities.drop_duplicates("entity_id").set_index("entity_id").reindex(ids)
    site = ent["site"] if "site" in ent else pd.Series(None, index=ids, dtype=object)
    ent["site"] = [s if isinstance(s, str) and s else infer_group(i) for i, s in zip(ids, site)]
    tags = ent["tags"] if "tags" in ent else pd.Series(None, index=ids, dtype=object)
    ent["tags"] = [tuple(t) if isinstance(t, (list, tuple)) else tuple(x for x in str(t).split(";") if x)
                   if isinstance(t, str) else () for t in tags]
    team = ent["team"] if "team" in ent else pd.Series(None, index=ids, dtype=object)
    ent["team"] = [t if isinstance(t, str) and t else None for t in team]
    return ent[["site", "tags", "team"]]


def _utc(df: pd.DataFrame) -> pd.DataFrame:
    """ts as datetime64[us, UTC] (one unit everywhere, so frames merge), even when empty."""
    if "ts" in df.columns:
        df = df.assign(ts=pd.to_datetime(df["ts"], utc=True).astype("datetime64[us, UTC]"))
    return df


def _us(ts) -> np.ndarray:
    """Timestamps as int64 microseconds since the epoch (UTC)."""
    return pd.to_datetime(pd.Series(ts), utc=True).astype("datetime64[us, UTC]").astype("int64").to_numpy()


def _us1(ts) -> int:
    """One timestamp as int64 microseconds since the epoch (UTC), as :func:`_us` gives it."""
    t = pd.Timestamp(ts)
    t = t.tz_localize("UTC") if t.tzinfo is None else t
    return t.value // 1000


def _empty_hits() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="datetime64[us, UTC]" if c in ("ts", "since") else object)
                         for c in HIT_COLUMNS})


def _margin(measure, threshold) -> np.ndarray:
    m = np.asarray(measure, float)
    if threshold <= 0:
        return np.ones_like(m)
    return np.clip((m - threshold) / threshold, 0.0, 1.0)


def _run_lengths(flag: np.ndarray, series_code: np.ndarray) -> np.ndarray:
    """Length of the run of True ending at each row (0 where False); runs break at series changes.

    Rows must be sorted by series then time.
    """
    flag = np.asarray(flag, bool)
    n = len(flag)
    if n == 0:
        return np.zeros(0, np.int64)
    new_series = np.r_[True, series_code[1:] != series_code[:-1]]
    breaks = ~flag | new_series
    # index of the last break at or before each row
    idx = np.where(breaks, np.arange(n), 0)
    last_break = np.maximum.accumulate(idx)
    run = np.arange(n) - last_break + np.where(flag[last_break], 1, 0)
    return np.where(flag, run, 0)


def _series_code(d: pd.DataFrame) -> np.ndarray:
    """One code per (entity_id, metric) run of rows sorted by entity, metric and time (only where it
    changes matters: :func:`_run_lengths` breaks runs there)."""
    if len(d) == 0:
        return np.zeros(0, np.int64)
    e, m = pd.factorize(d["entity_id"])[0], pd.factorize(d["metric"])[0]
    change = np.r_[True, (e[1:] != e[:-1]) | (m[1:] != m[:-1])]
    return np.cumsum(change) - 1


def _floors(cfg: AlertRules, rule, metric, family) -> np.ndarray:
    """``cfg.floor(rule, metric, family)`` for every row, computed once per distinct pair."""
    mc, mu = pd.factorize(pd.Series(metric), use_na_sentinel=False)
    fc, fu = pd.factorize(pd.Series(family), use_na_sentinel=False)
    if len(mc) == 0:
        return np.zeros(0, float)
    table = np.array([[cfg.floor(rule, m, f) for f in fu] for m in mu], float).reshape(len(mu), len(fu))
    return table[mc, fc]


# ------------------------------------------------------------------------------------------------
# rule conditions
# ------------------------------------------------------------------------------------------------
def _flagged(inputs: RuleInputs, min_severity: str = "warning") -> pd.DataFrame:
    s = inputs.scores
    at_least = [k for k, v in SEVERITY_RANK.items() if v >= SEVERITY_RANK[min_severity]]
    ok = s["is_anomaly"].fillna(False).astype(bool) & s["severity"].isin(at_least)
    return s[ok]


def _top_of_point(inputs: RuleInputs) -> pd.DataFrame:
    """Per flagged (entity, ts): rank-1 metric and the dominant family (largest summed share)."""
    e = inputs.explanations
    if e.empty:
        return _utc(pd.DataFrame(columns=["entity_id", "ts", "metric", "family"]))
    top_metric = e[e["rank"] == 1][["entity_id", "ts", "metric"]]
    fam = e.groupby(["entity_id", "ts", "family"], as_index=False)["contribution"].sum()
    fam = fam.sort_values(["entity_id", "ts", "contribution", "family"], ascending=[True, True, False, True])
    fam = fam.drop_duplicates(["entity_id", "ts"])[["entity_id", "ts", "family"]]
    return top_metric.merge(fam, on=["entity_id", "ts"], how="outer")


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
    d = d.sort_values(["entity_id", "metric", "ts"])
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


def peer_groups(inputs: RuleInputs | pd.DataFrame, peer_by: str = "site") -> pd.Series:
    """entity_id -> its peer group (None: no group) for ``peer_by`` (site, or tag:<tag>), from
    ``inputs.entity_info`` (or an :func:`entity_info` frame)."""
    info = inputs.entity_info if isinstance(inputs, RuleInputs) else inputs
    if peer_by == "site":
        return info["site"]
    tag = peer_by.split(":", 1)[1]
    return pd.Series([tag if tag in tags else None for tags in info["tags"]], index=info.index)


def peer_stats(inputs: RuleInputs, peer_by: str = "site", rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every decomposition row with its peer group, group size and robust z against the group.

    ``rows``: only these decomposition rows (default all); the figures are the same as over all rows
    when ``rows`` holds every row of each (group, metric, ts) it touches.
    """
    d = (inputs.decomposition if rows is None else rows)[
        ["entity_id", "metric", "family", "ts", "value", "expected", "residual", "residual_z"]]
    group = peer_groups(inputs, peer_by)
    d = d.assign(group=d["entity_id"].map(group)).dropna(subset=["group", "residual_z"])
    fig = (inputs.peer_figures or {}).get(peer_by)
    if fig is not None:  # the fleet's figures, computed beforehand (same numbers)
        m = d[["group", "metric", "ts"]].merge(fig, on=["group", "metric", "ts"], how="left")
        n, med, mad = m["n"].to_numpy(), m["median"].to_numpy(float), m["mad"].to_numpy(float)
    else:
        g = d.groupby(["group", "metric", "ts"])["residual_z"]
        med = g.transform("median")
        mad = (d["residual_z"] - med).abs().groupby([d["group"], d["metric"], d["ts"]]).transform("median")
        n, med, mad = g.transform("size").to_numpy(), med.to_numpy(float), mad.to_numpy(float)
    scale = np.maximum(1.4826 * mad, MAD_FLOOR)
    return d.assign(peers=n - 1, peer_median_z=med, robust_z=(d["residual_z"].to_numpy(float) - med) / scale)


def fleet_outlier_hits(rule, inputs: RuleInputs, cfg: AlertRules, start, end, peers=None) -> pd.DataFrame:
    p = peers if peers is not None else peer_stats(inputs, rule.peer_by)
    p = _select_series(p, rule.metrics, rule.families).sort_values(["entity_id", "metric", "ts"])
    if p.empty:
        return _empty_hits()
    floors = _floors(cfg, rule, p["metric"], p["family"])
    cond = ((p["robust_z"].abs().to_numpy() >= rule.z) & (p["peers"].to_numpy() >= rule.min_peers)
            & (p["residual"].abs().to_numpy() >= floors))
    run = _run_lengths(cond, _series_code(p))
    return _run_hits(p, run, run >= rule.periods, p["robust_z"].abs(), rule.z, rule, inputs, start, end)


def _stands_out(hits: pd.DataFrame, peers: pd.DataFrame, z: float, min_peers: int = 3) -> pd.DataFrame:
    """Drop hits whose metric moves with its site peers: a weekend, a heat wave or the grid moves a
    whole site, not one machine. A hit stands out when its robust z against the peers is at least
    ``z`` *and* the peers' common move (their median residual_z) is less than half of its own
    deviation. Without ``min_peers`` peers nothing can be told: the hit is kept."""
    p = _at_points(peers, hits)[["entity_id", "ts", "metric", "residual_z", "peer_median_z", "robust_z", "peers"]]
    m = hits.merge(p, on=["entity_id", "ts", "metric"], how="left")
    own = (m["residual_z"] - m["peer_median_z"]).abs() >= 0.5 * m["residual_z"].abs()
    keep = (m["peers"].fillna(0) < min_peers) | ((m["robust_z"].abs() >= z) & own)
    return hits[keep.to_numpy()]


def _confirmed_by_detector(hits: pd.DataFrame, inputs: RuleInputs) -> pd.DataFrame:
    """Keep hits whose run ``[since, ts]`` holds at least one point the detector flagged."""
    f = _flagged(inputs)
    if f.empty:
        return hits.iloc[0:0]
    # the entity's latest flagged point at or before the hit lies in the run
    codes, _ = pd.factorize(pd.concat([pd.Series(np.asarray(hits["entity_id"], object)),
                                       pd.Series(np.asarray(f["entity_id"], object))], ignore_index=True))
    left = pd.DataFrame({"e": codes[:len(hits)], "t": _us(hits["ts"]), "i": np.arange(len(hits))}).sort_values("t")
    right = pd.DataFrame({"e": codes[len(hits):], "t": _us(f["ts"])}).sort_values("t")
    right["flagged"] = right["t"]
    m = pd.merge_asof(left, right, on="t", by="e", direction="backward")
    keep = np.zeros(len(hits), bool)
    keep[m["i"].to_numpy()] = (m["flagged"].to_numpy(float) >= _us(hits["since"])[m["i"].to_numpy()])
    return hits[keep]


def _not_from_stuck_readings(hits: pd.DataFrame, stuck_rules: list[str]) -> pd.DataFrame:
    """Drop other rules' hits on a metric while its readings are frozen: they describe the sensor,
    not the machine (a stuck temperature reads 'too hot' at night)."""
    is_stuck = hits["rule"].isin(stuck_rules)
    runs = hits[is_stuck][["entity_id", "metric", "since", "ts"]].rename(columns={"since": "s0", "ts": "s1"})
    if runs.empty:
        return hits
    others = hits[~is_stuck].reset_index()
    m = others.merge(runs, on=["entity_id", "metric"])
    inside = m[(m["ts"] >= m["s0"]) & (m["ts"] <= m["s1"])]["index"].unique()
    return hits.drop(index=inside)


def find_hits(cfg: AlertRules, inputs: RuleInputs, start, end) -> pd.DataFrame:
    """Every rule's hits in ``[start, end)``, sorted by entity, rule and time."""
    start, end = pd.Timestamp(start), pd.Timestamp(end)
    out = []
    peers: dict[str, pd.DataFrame] = {}
    for rule in cfg.active:
        if rule.type == "burst":
            h = burst_hits(rule, inputs, start, end)
        elif rule.type == "dominant_family":
            h = dominant_family_hits(rule, inputs, cfg, start, end)
        elif rule.type == "sustained_deviation":
            h = sustained_hits(rule, inputs, cfg, start, end)
        else:
            if rule.peer_by not in peers:
                peers[rule.peer_by] = peer_stats(inputs, rule.peer_by)
            h = fleet_outlier_hits(rule, inputs, cfg, start, end, peers[rule.peer_by])
        if len(h) and getattr(rule, "require_flagged", False):
            h = _confirmed_by_detector(h, inputs)
        if len(h) and cfg.peer_z(rule) > 0:
            if "site" not in peers:
                peers["site"] = peer_stats(inputs, "site")
            h = _stands_out(h, peers["site"], cfg.peer_z(rule))
        if len(h):
            out.append(h)
    if not out:
        return _empty_hits()
    hits = pd.concat(out, ignore_index=True)
    stuck = [r.name for r in cfg.active if r.type == "sustained_deviation" and r.condition == "stuck"]
    if stuck:
        hits = _not_from_stuck_readings(hits, stuck)
    for c in ("ts", "since"):
        hits[c] = pd.to_datetime(hits[c], utc=True).astype("datetime64[us, UTC]")
    hits["measure"] = hits["measure"].astype(float)
    hits["margin"] = hits["margin"].astype(float)
    return hits.sort_values(["entity_id", "rule", "ts"], kind="stable").reset_index(drop=True)


# ------------------------------------------------------------------------------------------------
# severity, routing, confidence
# ------------------------------------------------------------------------------------------------
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

    @property
    def id(self) -> str:
        return alert_id(self.rule, self.entity_id, self.opened_at)

    @property
    def kept_as_stored(self) -> bool:
        """Owned by a person (resolved) or by a later run (stored with hits after the ones seen here)."""
        return self.stored is not None and (self.frozen or pd.Timestamp(self.stored["last_seen_at"]) >= self.last_seen_at)


def _peak_key(h: Mapping) -> tuple:
    return (SEVERITY_RANK[h["severity"]], h["measure"], h["ts"])


def _from_row(row: Mapping, human: Mapping[str, str]) -> _Alert:
    ev = row.get("evidence")
    ev = json.loads(ev) if isinstance(ev, str) else (ev or {})
    status = human.get(row["alert_id"])
    a = _Alert(row["rule"], row["entity_id"], pd.Timestamp(row["opened_at"]), pd.Timestamp(row["last_seen_at"]),
               row["severity"], int(row.get("hits") or 1), ev.get("_peak") or {}, frozen=status == "resolved",
               acknowledged=status == "acknowledged", stored=dict(row), fault_kind=row.get("fault_kind"))
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
                touched[cur.id] = cur
                continue
        a = _Alert(h["rule"], h["entity_id"], h["ts"], h["ts"], h["severity"], 1, h, fault_kind=h["fault_kind"])
        state = human.get(a.id)
        a.frozen, a.acknowledged = state == "resolved", state == "acknowledged"
        current[key] = a
        touched[a.id] = a
    return list(touched.values())


# ------------------------------------------------------------------------------------------------
# words and evidence
# ------------------------------------------------------------------------------------------------
def _fmt(x) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:,.0f}"


def _when(ts: pd.Timestamp) -> str:
    return pd.Timestamp(ts).tz_convert("UTC").strftime("%m-%d %H:%M")


def _dur(td) -> str:
    s = pd.Timedelta(td).total_seconds()
    return f"{s / 86400:g} d" if s >= 86400 and s % 86400 == 0 else f"{s / 3600:g} h" if s >= 3600 else f"{s / 60:g} min"


class EvidenceBuilder:
    """Evidence (expected vs actual, σ, top metrics, family shares, peers) for alerts' peak hits."""

    def __init__(self, inputs: RuleInputs, points: pd.DataFrame | None = None):
        """``points`` (entity_id, ts): the only points evidence is asked for (default: any)."""
        self.inputs = inputs
        dec, expl, scores = inputs.decomposition, inputs.explanations, inputs.scores
        peer_rows = None
        if points is not None:
            points = _utc(points[["entity_id", "ts"]].drop_duplicates())
            dec, expl, scores = (_at_points(x, points) for x in (dec, expl, scores))
            # the peers' figures at those points need every row of the entity's group at that time
            group = peer_groups(inputs, "site")
            at = inputs.decomposition[inputs.decomposition["ts"].isin(points["ts"])]
            wanted = pd.MultiIndex.from_arrays([points["entity_id"].map(group), points["ts"]])
            peer_rows = at[pd.MultiIndex.from_arrays([at["entity_id"].map(group), at["ts"]]).isin(wanted)]
        # per point, its rows in their order (what .loc on a stably sorted (entity_id, ts) index gave)
        self._dec, self._expl, self._scores = _ByPoint(dec), _ByPoint(expl), _ByPoint(scores)
        peers = peer_stats(inputs, "site", peer_rows)
        if points is not None:
            peers = _at_points(peers, points)
        self._peers = _ByPoint(peers, ("metric",))
        # what point(), peer() and score() read, taken out of the frames once (python values)
        self._z = self._dec.lists(["metric", "residual_z"])
        self._peer_row = self._peers.first(["group", "peers", "peer_median_z", "robust_z"])
        self._score_row = self._scores.first(["anomaly_score", "severity"])
        self._top, self._fam = {}, {}
        e = self._expl.rows
        if len(e):
            k = np.repeat(np.arange(len(self._expl.at)), [b - a for a, b in self._expl.at.values()])
            e = e.assign(_k=k).sort_values(["_k", "rank"], kind="stable")  # by rank within a point
            keys = list(self._expl.at)
            for i, m, f, c, x, v in zip(e["_k"].tolist(), e["metric"].tolist(), e["family"].tolist(),
                                        e["contribution"].tolist(), e["expected"].tolist(), e["actual"].tolist()):
                self._top.setdefault(keys[i], []).append(
                    {"metric": m, "family": f, "contribution": round(float(c), 4), "expected": _num(x), "actual": _num(v)})
            fam = e.groupby(["_k", "family"])["contribution"].sum()  # summed in rank order, as per point
            for (i, f), c in zip(fam.index.tolist(), fam.tolist()):
                self._fam.setdefault(keys[i], ([], []))
                self._fam[keys[i]][0].append(f)
                self._fam[keys[i]][1].append(c)

    def rows(self, entity: str, ts) -> pd.DataFrame:
        """The decomposition rows of ``entity`` at ``ts`` (one per metric)."""
        return self._dec.get((entity, _us1(ts)))

    def point(self, entity: str, ts: pd.Timestamp) -> dict:
        key = (entity, _us1(ts))
        if key in self._top:  # flagged: the explanations, by rank
            top = [dict(t) for t in self._top[key]]
            names, sums = self._fam[key]
            fam = pd.Series(sums, index=names, dtype=float)
            z = dict(zip(*self._z.get(key, ([], []))))
        else:  # not flagged: shares of the squared residual_z, like the explanations
            rows = self._dec.get(key)
            z2 = np.square(np.nan_to_num(rows["residual_z"].to_numpy(float)))
            share = z2 / z2.sum() if z2.sum() > 0 else np.full(len(z2), 1 / max(len(z2), 1))
            order = np.argsort(-share, kind="stable")
            r = rows.iloc[order]
            top = [{"metric": m, "family": f, "contribution": round(float(c), 4), "expected": _num(x), "actual": _num(v)}
                   for m, f, c, x, v in zip(r["metric"], r["family"], share[order], r["expected"], r["value"])]
            fam = pd.Series(share, index=rows["family"].to_numpy()).groupby(level=0).sum()
            z = dict(zip(rows["metric"], rows["residual_z"]))
        for t in top:
            t["z"] = _num(z.get(t["metric"]))
        return {"top_metrics": top[:3], "family_shares": {k: round(float(v), 4) for k, v in fam.sort_values(ascending=False).items()}}

    def peer(self, entity: str, ts: pd.Timestamp, metric: str) -> dict | None:
        r = self._peer_row.get((entity, _us1(ts), metric))
        if r is None:
            return None
        group, peers, median, robust = r
        return {"group": group, "peers": int(peers), "peer_median_z": _num(median), "robust_z": _num(robust)}

    def score(self, entity: str, ts: pd.Timestamp) -> dict:
        r = self._score_row.get((entity, _us1(ts)))
        if r is None:
            return {}
        return {"anomaly_score": _num(r[0]), "severity": r[1]}


class _ByPoint:
    """``get((entity_id, ts as int64 µs, *extra))``: the rows of ``df`` there, in their order in ``df``."""

    def __init__(self, df: pd.DataFrame, extra: tuple[str, ...] = ()):
        self.empty = df.iloc[0:0]
        if df.empty:
            self.rows, self.at = df, {}
            return
        codes = [pd.factorize(df[c], use_na_sentinel=False) for c in ("entity_id", *extra)]
        t = _us(df["ts"])
        keys = [codes[0][0], t, *(c for c, _ in codes[1:])]
        order = np.lexsort(keys[::-1])  # stable: equal keys keep their order
        keys = [k[order] for k in keys]
        change = np.zeros(len(df), bool)
        change[0] = True
        for k in keys:
            change[1:] |= k[1:] != k[:-1]
        first = np.flatnonzero(change)
        last = np.r_[first[1:], len(df)].tolist()
        parts = [np.asarray(codes[0][1], object)[keys[0][first]].tolist(), keys[1][first].tolist(),
                 *(np.asarray(u, object)[k[first]].tolist() for k, (_, u) in zip(keys[2:], codes[1:]))]
        self.rows = df.iloc[order]
        self.at = dict(zip(zip(*parts), zip(first.tolist(), last)))

    def get(self, key) -> pd.DataFrame:
        ab = self.at.get(key)
        return self.empty if ab is None else self.rows.iloc[ab[0]:ab[1]]

    def first(self, columns: list[str]) -> dict[tuple, tuple]:
        """key -> the values of ``columns`` in its first row."""
        if not self.at:
            return {}
        firsts = np.fromiter((a for a, _ in self.at.values()), np.int64, len(self.at))
        values = [self.rows[c].to_numpy(object)[firsts].tolist() for c in columns]
        return dict(zip(self.at, zip(*values)))

    def lists(self, columns: list[str]) -> dict[tuple, tuple[list, ...]]:
        """key -> the values of ``columns`` in its rows, one list per column."""
        values = [self.rows[c].tolist() for c in columns]
        return {k: tuple(v[a:b] for v in values) for k, (a, b) in self.at.items()}


def _at_points(df: pd.DataFrame, points: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``df`` at the (entity_id, ts) of ``points``, in their order in ``df``."""
    near = df[df["entity_id"].isin(points["entity_id"].unique()) & df["ts"].isin(points["ts"])]
    keys = pd.MultiIndex.from_arrays([points["entity_id"], points["ts"]])
    return near[pd.MultiIndex.from_arrays([near["entity_id"], near["ts"]]).isin(keys)]


def _clean(x):
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _num(x):
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return round(x, 4) if math.isfinite(x) else None


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
    unit = f" {units[metric]}" if metric in units else ""
    fam_share = point["family_shares"]
    if rule.type == "burst":
        head = f"{int(p['measure'])} anomalous points within {_dur(rule.within)} (since {_when(p['since'])})"
    elif rule.type == "dominant_family":
        head = f"{'+'.join(rule.families)} {p['measure']:.0%} of the deviation"
    elif rule.type == "sustained_deviation" and rule.condition == "stuck":
        head = (f"{metric} stuck at {_fmt(lead['actual']) if lead else '?'}{unit} for {int(p['measure'])} readings "
                f"since {_when(p['since'])} (it normally changes every reading)")
    elif rule.type == "sustained_deviation":
        word = {"above": "above", "below": "below", "either": "away from"}[rule.direction]
        head = f"{metric} {word} expected for {int(p['measure'])} consecutive readings since {_when(p['since'])}"
    else:
        head = (f"{metric} departs from its {peers['peers'] if peers else '?'} peers at "
                f"{peers['group'] if peers else '?'} (robust z {p['measure']:.1f})")
    parts = [head]
    if lead and lead.get("expected") is not None:
        z = lead.get("z")
        parts.append(f"{lead['metric']} {_fmt(lead['actual'])}{unit} vs {_fmt(lead['expected'])} expected"
                     + (f" ({z:+.1f}σ)" if z is not None else ""))
    if fam_share and rule.type != "dominant_family":
        f, s = next(iter(fam_share.items()))
        parts.append(f"{f} family {s:.0%} of the deviation")
    if a.hits > 1:
        parts.append(f"{a.hits} hits since {_when(a.opened_at)}")
    if peers and rule.type != "fleet_outlier" and peers["robust_z"] is not None:
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
        # rounded: the same data gives the same bytes (sums over metrics may differ in the last bit)
        "_peak": {k: (str(v) if isinstance(v, pd.Timestamp) else _num(v) if isinstance(v, (float, np.floating)) else v)
                  for k, v in p.items()
                  if k in ("ts", "since", "measure", "margin", "metric", "family", "severity", "score_severity")},
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
        })
    df = pd.DataFrame(out, columns=ALERT_COLUMNS)
    return apply_clock(df, cfg, clock)


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


# ------------------------------------------------------------------------------------------------
# did known faults reach the right team?
# ------------------------------------------------------------------------------------------------
def fault_routing(alerts: pd.DataFrame, faults: pd.DataFrame, cfg: AlertRules,
                  slack: pd.Timedelta = pd.Timedelta(hours=6)) -> pd.DataFrame:
    """Per known incident (entity and fault kind; its windows merged): was there an alert, and did
    one reach the team the routing gives that fault kind?

    An alert counts for an incident when it is on the same entity and ``[opened_at, last_seen_at]``
    overlaps ``[start, end + slack]`` (detection lags: evidence accumulates).
    faults : entity_id, fault_kind, start, end.  Returns one row per incident.
    """
    f = faults.assign(start=pd.to_datetime(faults["start"], utc=True), end=pd.to_datetime(faults["end"], utc=True))
    inc = f.groupby(["entity_id", "fault_kind"], as_index=False).agg(start=("start", "min"), end=("end", "max"))
    probe = cfg.rules[0] if cfg.rules else None
    inc["expected_team"] = [route(cfg, probe.model_copy(update={"team": None}), fault_kind=k) if probe
                            else cfg.routing.default_team for k in inc["fault_kind"]]
    a = alerts.assign(opened_at=pd.to_datetime(alerts["opened_at"], utc=True),
                      last_seen_at=pd.to_datetime(alerts["last_seen_at"], utc=True))
    m = inc.merge(a[["entity_id", "alert_id", "team", "opened_at", "last_seen_at"]], on="entity_id", how="left")
    m["overlaps"] = (m["opened_at"] <= m["end"] + slack) & (m["last_seen_at"] >= m["start"])
    m = m[m["overlaps"]].sort_values("opened_at")
    teams = m.groupby(["entity_id", "fault_kind"])["team"].agg(list)
    first = m.groupby(["entity_id", "fault_kind"])["team"].first()
    key = pd.MultiIndex.from_frame(inc[["entity_id", "fault_kind"]])
    inc["teams"] = [teams.get(k, []) for k in key]
    inc["alerted"] = inc["teams"].map(len) > 0
    inc["right_team"] = [e in t for e, t in zip(inc["expected_team"], inc["teams"])]
    inc["first_alert_team"] = [first.get(k) for k in key]
    return inc
