"""What the rules read (:class:`RuleInputs`) and the vectorised helpers every rule condition uses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from anomaly_assets.alert_config import SEVERITY_RANK, AlertRules, infer_group
from anomaly_assets.core.explain import infer_family
from anomaly_assets.core.semantics import metric_kinds

HIT_COLUMNS = ["rule", "entity_id", "ts", "measure", "margin", "metric", "family", "since", "score_severity"]
# business rules' hits carry these too (NaN for the others): totals over the hit's window, in metric
# units, and the money at stake
AMOUNT_COLUMNS = ["actual_total", "expected_total", "value_at_risk", "stock_level"]
ALERT_COLUMNS = ["alert_id", "rule", "entity_id", "opened_at", "last_seen_at", "status", "severity", "team",
                 "confidence", "title", "why", "evidence", "fault_kind", "family", "hits", "resolved_at", "value_at_risk"]
MAD_FLOOR = 0.5  # σ: peers that never move would otherwise make every wiggle an outlier
_K_PRIOR = 5.0  # pseudo-feedback behind a rule's prior precision


@dataclass
class RuleInputs:
    """What the rules read, all for ``[start - lookback, end)``.

    scores : entity_id, ts, anomaly_score, is_anomaly, severity
    explanations : entity_id, ts, metric, rank, contribution, family, expected, actual (flagged points)
    decomposition : entity_id, metric, ts, value, expected, residual, residual_z (every observation),
        sorted by entity_id, metric and ts here, so that the rules never sort it again
    entities : entity_id, site, tags (list of str), team — entities missing here get a site inferred
        from their id (pump-0007 -> pump) and no tags
    peer_figures : peer_by -> group, metric, ts, n, median, mad of residual_z (the pandas group median:
        middle value or mean of the two middle ones; mad: median of |residual_z - median|)
        computed over the whole fleet, when the rows here are only some entities of it (a chunk);
        default: computed from ``decomposition``
    kinds : metric -> declared kind (``core/semantics.py``); the others are inferred into
        ``metric_kind``
    attributes : entity_id and any other columns of the entity register (entities.csv: price_usd,
        store, sku, country, ...), for value at risk and calendar scopes
    events : entity_id, day (UTC midnight), kind, name: known calendar events (holidays,
        promotions) of each entity; rules stay quiet on them
    """

    scores: pd.DataFrame
    explanations: pd.DataFrame
    decomposition: pd.DataFrame
    entities: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["entity_id", "site", "tags", "team"]))
    families: Mapping[str, str] = field(default_factory=dict)
    units: Mapping[str, str] = field(default_factory=dict)
    peer_figures: Mapping[str, pd.DataFrame] | None = None
    kinds: Mapping[str, str] = field(default_factory=dict)
    attributes: pd.DataFrame | None = None
    events: pd.DataFrame | None = None

    def __post_init__(self):
        self.scores = _utc(self.scores)
        self.explanations = _utc(self.explanations)
        dec = _utc(self.decomposition).sort_values(["entity_id", "metric", "ts"])
        if "family" not in dec.columns:
            fam = {m: infer_family(m, self.families) for m in dec["metric"].unique()}
            dec["family"] = map_distinct(dec["metric"], fam)
        self.decomposition = dec
        self.metric_kind = metric_kinds(dec, self.kinds)
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


def map_distinct(keys: pd.Series, mapping) -> pd.Series:
    """``keys.map(mapping)``, looked up once per distinct key: ``Series.map`` makes a Python
    string of every one of millions of Arrow strings to hash it."""
    codes, uniques = pd.factorize(keys, use_na_sentinel=False)
    mapped = pd.Series(uniques).map(mapping)
    return pd.Series(mapped.array.take(codes), index=keys.index, name=keys.name)


def _utc(df: pd.DataFrame) -> pd.DataFrame:
    """ts as datetime64[us, UTC] (one unit everywhere, so frames merge), even when empty."""
    if "ts" in df.columns:
        df = df.assign(ts=pd.to_datetime(df["ts"], utc=True).astype("datetime64[us, UTC]"))
    return df


def _event_days(events: pd.DataFrame) -> pd.DataFrame:
    """entity_id, day (datetime64[us, UTC]) of known events, each pair once."""
    ev = events[["entity_id", "day"]].drop_duplicates()
    return ev.assign(day=pd.to_datetime(ev["day"], utc=True).astype("datetime64[us, UTC]"))


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
                         for c in HIT_COLUMNS + AMOUNT_COLUMNS})


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


