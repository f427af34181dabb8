"""Every rule's hits, with the guards that apply across rules (detector confirmation, peers, stuck readings)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from anomaly_assets.alert_config import AlertRules
from anomaly_assets.core.rules.business import business_gap_hits
from anomaly_assets.core.rules.conditions import burst_hits, dominant_family_hits, fleet_outlier_hits, sustained_hits
from anomaly_assets.core.rules.inputs import (AMOUNT_COLUMNS, HIT_COLUMNS, RuleInputs, _empty_hits, _event_days,
                                              _flagged, _us)
from anomaly_assets.core.rules.peers import _stands_out, peer_stats


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


def _not_on_known_events(hits: pd.DataFrame, events: pd.DataFrame, after) -> pd.DataFrame:
    """Drop hits whose window ``[since - after, ts]`` holds a known event day of their entity: a
    holiday, a promotion or a store event moves the numbers on purpose, and the days after it
    (restocking, pent-up or pulled-forward demand) are its consequence, not a fault. ``after``: one
    Timedelta, or a Series of them aligned with ``hits`` (per rule)."""
    ev = _event_days(events)
    h = hits.reset_index()[["index", "entity_id", "ts", "since"]]
    after = pd.to_timedelta(after.to_numpy()) if isinstance(after, pd.Series) else after
    h = h.assign(lo=(pd.to_datetime(h["since"], utc=True) - after).dt.floor("D"),
                 hi=pd.to_datetime(h["ts"], utc=True))
    m = h.merge(ev[ev["entity_id"].isin(h["entity_id"].unique())], on="entity_id")
    on_event = m[(m["day"] >= m["lo"]) & (m["day"] <= m["hi"])]["index"].unique()
    return hits.drop(index=on_event)


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
        elif rule.type == "business_gap":
            h = business_gap_hits(rule, inputs, cfg, start, end)
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
    hits = pd.concat(out, ignore_index=True).reindex(columns=HIT_COLUMNS + AMOUNT_COLUMNS)
    if inputs.events is not None and len(inputs.events):
        after = {r.name: pd.Timedelta(cfg.after_events(r)) for r in cfg.active}
        hits = _not_on_known_events(hits, inputs.events, hits["rule"].map(after))
    stuck = [r.name for r in cfg.active if r.type == "sustained_deviation" and r.condition == "stuck"]
    if stuck:
        hits = _not_from_stuck_readings(hits, stuck)
    for c in ("ts", "since"):
        hits[c] = pd.to_datetime(hits[c], utc=True).astype("datetime64[us, UTC]")
    hits["measure"] = hits["measure"].astype(float)
    hits["margin"] = hits["margin"].astype(float)
    return hits.sort_values(["entity_id", "rule", "ts"], kind="stable").reset_index(drop=True)


