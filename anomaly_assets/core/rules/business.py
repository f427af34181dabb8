"""Rules on money and stock: a business metric's total over a few readings far from what was expected.

One rule type, ``business_gap``, covers the business faults because they share a shape: over
the last ``window`` readings, the metric's actual total is a small share of its expected total
(``below``: a payment channel down, a settlement missing, a SKU that stopped selling) or a multiple
of it (``above``: a settlement posted twice, a demand spike, delinquency up). What tells the faults
apart is context, each an option of the rule:

- ``others`` hold: the other payment channels are at least ``hold_share`` of their expected
  (where that is material). A card processor outage takes card payments down while ACH and cash
  carry on; a closed office takes everything down.
- ``stock``: ``frozen`` = the stock metric is above 0 and did not change over the window and the
  reading before it (the system says the shelf holds stock, yet nothing sells: ghost stock);
  ``moving`` = it did change (sales slowed but the shelf is being sold from).
- ``after_gap``: the reading before the window was itself a gap (at most ``gap_share`` of its
  expected): a settlement missing one day and caught up the next. ``false`` excludes that case
  (a duplicate settlement is not the catch-up of a missing one).

And the series' own history, so that what it does anyway is not a fault:

- ``baseline``: the expected total is rescaled by the median actual / expected of the readings
  before the window (a drifting level the forecast lags is no spike; a ramp is).
- ``min_window_z``: the window's residual_z, summed and divided by sqrt(window), clears this (a
  spike of a noisy SKU must be larger than one of a steady SKU).
- ``recur_window`` / ``max_recur``: the condition held at most ``max_recur`` times in the readings
  before the window, known events and windows the stock context rules out aside (a SKU that dips
  every few weeks is not delisted; one that sold out did not dip).
- ``min_cover``: the stock metric stayed at or above this many readings of expected sales
  over the window and the reading before it: sales were not capped by an empty shelf (a stockout
  is not a drop in demand).
- ``max_tail_p`` (counts): the window's total is at most this probable under the series' own
  count law, fitted on the ``law_readings`` readings before the window (``_count_tail_p``). A
  slow mover selling nothing for three days is likelier than a fast mover selling a third.

Expected values are the detector's (``features.decomposition``): they carry the weekday,
day-of-month and holiday effects, so a quiet Sunday or a big 1st is not a gap. Evidence is in
money: ``value_at_risk`` is the gap in currency for a currency metric, and for units the gap times
the entity's ``price_column`` (entities.csv).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from anomaly_assets.alert_config import AlertRules
from anomaly_assets.core.rules.inputs import (AMOUNT_COLUMNS, HIT_COLUMNS, RuleInputs, _empty_hits, _event_days,
                                              _floors, _series_code)


def _window_sum(v: np.ndarray, first: np.ndarray, w: int) -> np.ndarray:
    """Sum of the last ``w`` values of each row's series (NaN until the series has ``w`` rows, or
    when one of them is NaN). ``first``: index of each row's series' first row.

    Summed reading by reading, not as a difference of running totals: a total must not depend on
    how much of the series' past the frame holds (a nightly run reads less than a backfill, and
    an expected total of exactly 6 must stay 6 against ``min_expected: 6``)."""
    idx = np.arange(len(v))
    out = np.zeros(len(v))
    for k in range(w):
        out += np.where(idx - k >= first, v[np.maximum(idx - k, 0)], np.nan)
    return out


def _at_least(x: np.ndarray, threshold: float) -> np.ndarray:
    """``x >= threshold`` up to float noise: a count's expected of 2 comes back from the detector's
    log scale as 1.9999999999999996, and three of them must still reach ``min_expected: 6``."""
    return x >= threshold - 1e-9 * max(abs(threshold), 1.0)


def _series_first(code: np.ndarray) -> np.ndarray:
    """Index of the first row of each row's series (rows sorted by series)."""
    n = len(code)
    new = np.r_[True, code[1:] != code[:-1]] if n else np.zeros(0, bool)
    return np.maximum.accumulate(np.where(new, np.arange(n), 0)) if n else np.zeros(0, np.int64)


def _lagged(v: np.ndarray, first: np.ndarray, k: int) -> np.ndarray:
    """The value ``k`` rows earlier in the same series (NaN before its start)."""
    idx = np.arange(len(v)) - k
    return np.where(idx >= first, v[np.maximum(idx, 0)], np.nan)


def _near_events(w: pd.DataFrame, events: pd.DataFrame | None, after: pd.Timedelta) -> np.ndarray:
    """Per row of ``w``: a known event day of its entity lies in ``[since - after, ts]`` (the rows
    the known-event guard of ``hits`` drops)."""
    if events is None or events.empty or w.empty:
        return np.zeros(len(w), bool)
    ev = _event_days(events).sort_values("day")
    rows = pd.DataFrame({"entity_id": w["entity_id"].to_numpy(), "i": np.arange(len(w)),
                         "day": pd.to_datetime(w["ts"], utc=True).astype("datetime64[us, UTC]").to_numpy(),
                         "lo": (pd.to_datetime(w["since"], utc=True) - after).dt.floor("D").to_numpy()})
    m = pd.merge_asof(rows.sort_values("day"), ev.assign(last=ev["day"]), on="day", by="entity_id",
                      direction="backward")  # the latest event day at or before ts
    out = np.zeros(len(w), bool)
    out[m["i"].to_numpy()] = (m["last"] >= m["lo"]).to_numpy(bool)
    return out


def _times_before(cond: np.ndarray, first: np.ndarray, w: int, n: int) -> np.ndarray:
    """How many of the ``n`` readings before each row's window of ``w`` met ``cond`` (the part of
    them within the row's series)."""
    return _trailing_sum(cond.astype(np.int64), first, w, n).astype(np.int64)


def _trailing_sum(v: np.ndarray, first: np.ndarray, w: int, n: int) -> np.ndarray:
    """Sum of the ``n`` readings before each row's window of ``w`` (the part of them within the
    row's series; NaN counts as 0). A difference of running totals: its last bits depend on the
    frame's earlier rows, harmless for the law's moments (no threshold sits on them)."""
    idx = np.arange(len(v))
    c = np.cumsum(np.r_[0.0, np.nan_to_num(v)])
    hi = idx - w  # the last reading before the window
    lo = np.maximum(hi - n + 1, first)
    return np.where(hi >= first, c[np.maximum(hi, 0) + 1] - c[np.minimum(lo, np.maximum(hi, 0) + 1)], 0.0)


def _on_events(d: pd.DataFrame, events: pd.DataFrame | None) -> np.ndarray:
    """Per row of ``d``: its day is a known event day of its entity."""
    if events is None or events.empty or d.empty:
        return np.zeros(len(d), bool)
    ev = _event_days(events)
    key = pd.MultiIndex.from_arrays([ev["entity_id"].astype(str), ev["day"]])
    day = pd.to_datetime(d["ts"], utc=True).dt.floor("D").astype("datetime64[us, UTC]")
    return pd.MultiIndex.from_arrays([d["entity_id"].astype(str), day]).isin(key)


def _stock_metrics(rule, inputs: RuleInputs) -> list[str]:
    """The rule's ``stock_metrics``, else every metric of kind stock."""
    return rule.stock_metrics or sorted(m for m, k in inputs.metric_kind.items() if k == "stock")


def _sold_out(rule, inputs: RuleInputs, d: pd.DataFrame) -> np.ndarray:
    """Per row of ``d``: the entity's stock metric read 0 or less then (what sold was capped)."""
    stock = _stock_metrics(rule, inputs)
    dec = inputs.decomposition
    s = dec[dec["metric"].isin(stock)]
    if s.empty or d.empty:
        return np.zeros(len(d), bool)
    low = s.loc[s["value"].to_numpy(float) <= 0, ["entity_id", "ts"]].drop_duplicates()  # few rows: stockouts
    if low.empty:
        return np.zeros(len(d), bool)
    return d[["entity_id", "ts"]].merge(low.assign(_out=True), on=["entity_id", "ts"], how="left")["_out"].notna().to_numpy()


def _count_tail_p(w: pd.DataFrame, rule, events: pd.DataFrame | None, capped: np.ndarray | None = None) -> np.ndarray:
    """Per row of ``w`` (``_windows``' output): the probability of a window total at least as far
    out, in ``rule.direction``, under the series' own count law; NaN without enough history.

    The law is a negative binomial (a Poisson whose rate varies from day to day: demand), fitted
    by moments on the ``law_readings`` readings before the window, known event days and the
    ``capped`` readings (sold out: sales were not demand) aside:

        mean_t = r x_t,    r = sum v / sum x,    1/k = sum((v - r x)^2 - r x) / sum((r x)^2),

    with x the detector's expected (its calendar effects; for a log-modelled count a median, which
    ``r`` turns into a mean) and v the actual. The window's total is then negative binomial with
    mean ``M = r * sum(x)`` and the variance of independent days, ``M + r^2 sum(x^2) / k``: shape
    ``k M^2 / (r^2 sum(x^2))`` (``window * k`` when every day has the same mean). 1/k is kept in
    [1e-3, 10]: near Poisson at one end, at the other a law so wide that nothing is improbable.
    The probability is nominal: the law's parameters are estimates, so windows of normal days
    fall below a threshold somewhat more often than it says.
    """
    from scipy import stats

    code = _series_code(w)
    first = _series_first(code)
    v, x = w["value"].to_numpy(float), w["expected"].to_numpy(float)
    ok = np.isfinite(v) & np.isfinite(x) & (x > 0) & ~_on_events(w, events)
    if capped is not None:
        ok &= ~capped
    v0, x0 = np.where(ok, v, 0.0), np.where(ok, x, 0.0)
    n, win = rule.law_readings, rule.window
    sums = {k: _trailing_sum(a, first, win, n) for k, a in
            (("n", ok.astype(float)), ("v", v0), ("x", x0), ("vv", v0 * v0), ("vx", v0 * x0), ("xx", x0 * x0))}
    with np.errstate(invalid="ignore", divide="ignore"):
        r = sums["v"] / sums["x"]
        excess = sums["vv"] - 2 * r * sums["vx"] + r * r * sums["xx"] - r * sums["x"]
        kinv = np.clip(excess / (r * r * sums["xx"]), 1e-3, 10.0)
        mean = r * w["expected_total"].to_numpy(float)
        shape = mean * mean / (kinv * r * r * _window_sum(x * x, first, win))
        q = shape / (shape + mean)
        a = w["actual_total"].to_numpy(float)
        p = stats.nbinom.cdf(a, shape, q) if rule.direction == "below" else stats.nbinom.sf(a - 1, shape, q)
    enough = (sums["n"] >= n / 2) & (r > 0) & np.isfinite(mean)
    return np.where(enough, p, np.nan)


def readings_needed(rule) -> int:
    """How many readings of a series a ``business_gap`` rule reads up to and including the one it
    judges: its window, the reading before it, and the history its options look back on (the
    baseline, the same weekday of the weeks before for ``others``, the count's law), before each
    of the windows the recurrence window judges too.

    Parameters
    ----------
    rule : BusinessGapRule

    Returns
    -------
    int
        Readings (days, on daily data); the alerts asset reads this far back before a run.
    """
    extra = max(rule.baseline or 0, 7 * WEEKS_BACK if rule.others else 0,
                rule.law_readings if rule.max_tail_p is not None else 0)
    # the recurrence judges the windows ending in the recur_window readings before this one, each
    # with its own history
    recur = rule.recur_window + rule.window - 1 if rule.recur_window else 0
    return rule.window + 1 + extra + recur


def watched_metrics(rule, inputs: RuleInputs) -> list[str]:
    """The metrics a business rule evaluates: its ``metrics``, else every metric of its ``kinds``."""
    if rule.metrics:
        return list(rule.metrics)
    return sorted(m for m, k in inputs.metric_kind.items() if k in (rule.kinds or ()))


def _recent_level(v: np.ndarray, x: np.ndarray, code: np.ndarray, first: np.ndarray, w: int, n: int) -> np.ndarray:
    """Median of actual / expected over the ``n`` readings before each row's window of ``w`` (NaN
    until the series has them all; readings with no positive expected are left out of the median)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.where(x > 0, v / x, np.nan)
    lag = _lagged(q, first, w)
    med = pd.Series(lag).groupby(code).rolling(n, min_periods=max(1, n // 2 + 1)).median().to_numpy(float)
    full = np.arange(len(v)) - w - n + 1 >= first  # the whole baseline lies in the series
    return np.where(full, med, np.nan)


def _windows(d: pd.DataFrame, w: int, baseline: int | None = None) -> pd.DataFrame:
    """Per row of ``d`` (sorted by entity, metric, ts): actual and expected totals over its window,
    and the row before the window (its value and expected).

    With ``baseline``, the expected total is rescaled by the metric's recent level: the median
    actual / expected of the ``baseline`` readings before the window. A level the detector has not
    caught up with yet is then not a deviation; only a change within the window is."""
    code = _series_code(d)
    first = _series_first(code)
    v, x = d["value"].to_numpy(float), d["expected"].to_numpy(float)
    expected_total = _window_sum(x, first, w)
    if baseline:
        expected_total = expected_total * _recent_level(v, x, code, first, w, baseline)
    return d.assign(actual_total=_window_sum(v, first, w), expected_total=expected_total,
                    before_value=_lagged(v, first, w), before_expected=_lagged(x, first, w),
                    since=d["ts"].array.take(np.maximum(np.arange(len(d)) - w + 1, first)))


WEEKS_BACK = 4  # same-weekday readings that say whether a channel settles on a weekday at all


def _same_weekday_typical(o: pd.DataFrame) -> np.ndarray:
    """Per row of ``o`` (entity_id, ts, actual_total): the median actual total at the same time of
    week over the ``WEEKS_BACK`` weeks before (NaN without any)."""
    key = o[["entity_id", "ts", "actual_total"]]
    past = []
    for k in range(1, WEEKS_BACK + 1):
        back = key.assign(ts=key["ts"] + pd.Timedelta(weeks=k))  # the reading k weeks before, moved onto ts
        past.append(o[["entity_id", "ts"]].merge(back, on=["entity_id", "ts"], how="left")["actual_total"].to_numpy(float))
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: the series' first weeks
        return np.nanmedian(np.vstack(past), axis=0)


def _others_hold(rule, cfg: AlertRules, inputs: RuleInputs, at: pd.DataFrame) -> np.ndarray:
    """At each (entity_id, ts) of ``at``: every metric of ``others`` is at least ``hold_share`` of
    its expected over the same window, or that is not material: its expected is below its floor,
    or the metric does not normally move then (its median over the same weekday of the weeks
    before is below its floor: ACH settles no weekend, whatever the forecast says)."""
    ok = np.ones(len(at), bool)
    dec = inputs.decomposition
    for m in rule.others:
        o = dec[dec["metric"] == m].sort_values(["entity_id", "ts"])
        if o.empty:
            continue
        o = _windows(o.assign(metric=m), rule.window)[["entity_id", "ts", "actual_total", "expected_total", "family"]]
        o = o.assign(typical=_same_weekday_typical(o))
        j = at[["entity_id", "ts"]].merge(o, on=["entity_id", "ts"], how="left")
        floor = max(cfg.floor(None, m, j["family"].iloc[0] if len(j) and isinstance(j["family"].iloc[0], str) else m), 0.0)
        typical = j["typical"].to_numpy(float)
        material = (j["expected_total"].to_numpy(float) > floor) & ~(typical <= floor)  # NaN typical: unknown, material
        holds = j["actual_total"].to_numpy(float) >= rule.hold_share * j["expected_total"].to_numpy(float)
        ok &= ~material | holds | j["expected_total"].isna().to_numpy()
    return ok


def _stock_state(rule, inputs: RuleInputs, at: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """(frozen, level, known, lowest) at each (entity_id, ts) of ``at``: the stock metric is > 0 and
    unchanged over the window and the reading before it; its level at the last reading and its
    lowest over those readings (NaN without them)."""
    stock = _stock_metrics(rule, inputs)
    dec = inputs.decomposition
    s = dec[dec["metric"].isin(stock) & dec["entity_id"].isin(at["entity_id"].unique())]  # whole series, in order
    if s.empty:  # no stock metric: the stock is neither frozen nor moving
        nan = np.full(len(at), np.nan)
        return np.zeros(len(at), bool), nan, np.zeros(len(at), bool), nan
    code = _series_code(s)
    first = _series_first(code)
    v = s["value"].to_numpy(float)
    step = np.abs(v - _lagged(v, first, 1))  # NaN at a series' first row: not frozen
    moved = _window_sum(step, first, rule.window)  # the window's readings against the one before each
    frozen = (moved == 0) & (v > 0)
    lowest = np.minimum.reduce([_lagged(v, first, k) for k in range(rule.window + 1)])  # NaN: one unknown
    f = s.assign(_frozen=frozen, _level=v, _lowest=lowest).groupby(["entity_id", "ts"], as_index=False).agg(
        _frozen=("_frozen", "all"), _level=("_level", "max"), _lowest=("_lowest", "max"))
    j = at[["entity_id", "ts"]].merge(f, on=["entity_id", "ts"], how="left")
    return (j["_frozen"].fillna(False).to_numpy(bool), j["_level"].to_numpy(float), j["_level"].notna().to_numpy(),
            j["_lowest"].to_numpy(float))


def _prices(rule, inputs: RuleInputs, ids: pd.Series) -> np.ndarray:
    """The entities' ``price_column`` (NaN when absent or not a number)."""
    attrs = inputs.attributes
    if not rule.price_column or attrs is None or rule.price_column not in attrs.columns:
        return np.full(len(ids), np.nan)
    price = pd.to_numeric(attrs.drop_duplicates("entity_id").set_index("entity_id")[rule.price_column], errors="coerce")
    return ids.map(price).to_numpy(float)


def business_gap_hits(rule, inputs: RuleInputs, cfg: AlertRules, start, end) -> pd.DataFrame:
    """Hits of a ``business_gap`` rule in ``[start, end)`` (see the module docstring).

    Parameters
    ----------
    rule : BusinessGapRule
    inputs : RuleInputs
    cfg : AlertRules
        For the materiality floors of ``others``.
    start, end : Timestamp

    Returns
    -------
    DataFrame
        ``HIT_COLUMNS`` + ``AMOUNT_COLUMNS``: measure = actual / expected over the window (below:
        the missing share, 1 - ratio; above: the ratio), one hit per (entity, ts), the largest gap.
    """
    metrics = watched_metrics(rule, inputs)
    dec = inputs.decomposition
    d = dec[dec["metric"].isin(metrics)]  # in series order (RuleInputs)
    if d.empty:
        return _empty_hits()
    w = _windows(d, rule.window, rule.baseline)
    a, x = w["actual_total"].to_numpy(float), w["expected_total"].to_numpy(float)
    floors = _floors(cfg, rule, w["metric"], w["family"])
    rz = w["residual_z"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        if rule.direction == "below":
            cond = (a <= rule.max_share * x) & (x - a >= floors) & _at_least(x, rule.min_expected) & (rz <= -rule.min_z)
            if rule.min_share is not None:
                cond &= a > rule.min_share * x
            measure = 1.0 - a / x
            margin = np.clip((rule.max_share - a / x) / max(rule.max_share, 1e-9), 0, 1)
        else:
            cond = (a >= rule.min_ratio * x) & (a - x >= floors) & _at_least(x, rule.min_expected) & (rz >= rule.min_z)
            measure = a / x
            margin = np.clip((a / x - rule.min_ratio) / rule.min_ratio, 0, 1)
        if rule.after_gap is not None:
            bv, bx = w["before_value"].to_numpy(float), w["before_expected"].to_numpy(float)
            gap_before = (bv <= rule.gap_share * bx) & (bx - bv >= floors) & _at_least(bx, rule.min_expected)
            cond &= gap_before if rule.after_gap else ~gap_before
    if rule.min_window_z:
        # the window's deviation in the detector's σ of the series: material against its own noise
        zw = _window_sum(rz, _series_first(_series_code(w)), rule.window) / np.sqrt(rule.window)
        with np.errstate(invalid="ignore"):
            cond &= (zw >= rule.min_window_z) if rule.direction == "above" else (zw <= -rule.min_window_z)
    cond &= np.isfinite(a) & np.isfinite(x) & (x > 0)
    if rule.max_tail_p is not None:
        with np.errstate(invalid="ignore"):
            cond &= _count_tail_p(w, rule, inputs.events, _sold_out(rule, inputs, w)) <= rule.max_tail_p
    stock_level = np.full(len(w), np.nan)
    if (rule.stock != "any" or rule.min_cover) and cond.any():
        # before the recurrence count: a window the stock rules out (a stockout) is no dip of demand
        at = np.flatnonzero(cond)
        frozen, level, known, lowest = _stock_state(rule, inputs, w.iloc[at])
        keep = {"frozen": frozen, "moving": known & ~frozen, "any": np.ones(len(at), bool)}[rule.stock]
        if rule.min_cover:  # the shelf held this many readings of expected sales throughout: sales were not capped
            with np.errstate(invalid="ignore"):
                keep &= lowest >= rule.min_cover * x[at] / rule.window
        cond[at] = keep
        stock_level[at] = level
    if rule.recur_window:
        # known events (promotions, holidays) explain their own deviations: they do not count
        usual = cond & ~_near_events(w, inputs.events, pd.Timedelta(cfg.after_events(rule)))
        cond &= _times_before(usual, _series_first(_series_code(w)), rule.window, rule.recur_window) <= rule.max_recur
    ts = w["ts"]
    cond &= ((ts >= start) & (ts < end)).to_numpy()
    if rule.skip_days_of_month:
        cond &= ~ts.dt.day.isin(rule.skip_days_of_month).to_numpy()
    h = w[cond].assign(measure=measure[cond], margin=margin[cond], stock_level=stock_level[cond])
    if rule.others and len(h):
        h = h[_others_hold(rule, cfg, inputs, h)]
    if h.empty:
        return _empty_hits()
    gap = np.abs(h["expected_total"].to_numpy(float) - h["actual_total"].to_numpy(float))
    kinds = h["metric"].map(inputs.metric_kind).to_numpy(object)
    price = _prices(rule, inputs, h["entity_id"])
    value = np.where(kinds == "currency", gap, gap * price)
    h = h.assign(value_at_risk=value)
    if rule.min_value > 0:
        h = h[np.nan_to_num(h["value_at_risk"].to_numpy(float)) >= rule.min_value]
    if h.empty:
        return _empty_hits()
    h = (h.sort_values(["entity_id", "ts", "measure", "metric"], ascending=[True, True, False, True])
         .drop_duplicates(["entity_id", "ts"]))
    h["rule"] = rule.name
    sev = inputs.scores[["entity_id", "ts", "severity"]]
    h["score_severity"] = h[["entity_id", "ts"]].merge(sev, on=["entity_id", "ts"], how="left")["severity"].fillna(
        "normal").to_numpy()
    return h[HIT_COLUMNS + AMOUNT_COLUMNS]
