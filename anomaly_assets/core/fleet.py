"""Fleet-level orchestration of the detection core: tidy frames in, tidy frames out.

The asset layer hands these functions the rows it read from the warehouse and writes back what
they return. Everything here is causal by construction: the output for day ``D`` is a function of
observations before the end of each point's own timestamp only (the expectation and the model
use data strictly before ``D``; the temporal smoothing uses earlier points of the same entity).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from anomaly_assets.core.detect import EntityDetector, severity
from anomaly_assets.core.explain import explain, smoothed_deviation
from anomaly_assets.core.forecast import forecast, seasonal_periods

DAY = pd.Timedelta(days=1)
CODE_VERSION = "2026.11.2"  # bump when a change alters scores for the same data and parameters


@dataclass(frozen=True)
class DecompositionParams:
    history_days: int = 14
    periods: tuple[int, ...] | None = None  # in samples; None = from the interval; the shortest supported is used
    robust: bool = True
    robust_passes: int = 2
    min_history_days: float = 7.0


@dataclass(frozen=True)
class DetectorParams:
    training_days: int = 28
    min_training_days: float = 3.0
    smoothing_alphas: tuple[float, ...] = (0.1, 0.02)
    residual_weight: float = 0.5
    if_weight: float = 0.0
    tail_quantile: float = 0.98
    spike_quantile: float = 0.999
    warning_p: float = 1e-3
    critical_p: float = 1e-5
    warmup_points: int = 300

    def detector(self) -> EntityDetector:
        return EntityDetector(if_weight=self.if_weight, smoothing_alphas=tuple(self.smoothing_alphas),
                              residual_weight=self.residual_weight, tail_quantile=self.tail_quantile,
                              spike_quantile=self.spike_quantile)

    def version(self, day: pd.Timestamp) -> str:
        blob = json.dumps({"params": asdict(self), "day": str(day.date()), "code": CODE_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def days_in(start: pd.Timestamp, end: pd.Timestamp) -> list[pd.Timestamp]:
    """UTC midnights in [start, end)."""
    return list(pd.date_range(start.floor("D"), end - pd.Timedelta(microseconds=1), freq="D", tz="UTC").floor("D").unique())


def sampling_interval(obs: pd.DataFrame) -> pd.Series:
    """Median spacing of each entity's distinct timestamps, in whole seconds (index entity_id)."""
    ts = obs[["entity_id", "ts"]].drop_duplicates().sort_values(["entity_id", "ts"])
    secs = pd.Series(_epoch_seconds(ts["ts"]), index=ts.index)
    d = secs.groupby(ts["entity_id"].to_numpy()).diff()
    out = d.groupby(ts["entity_id"].to_numpy()).median().round()
    return out.fillna(86_400).clip(lower=1).astype("int64")


def _epoch_seconds(ts: pd.Series) -> np.ndarray:
    return ts.dt.tz_convert("UTC").astype("datetime64[us, UTC]").astype("int64").to_numpy() / 1e6


# --------------------------------------------------------------------------------------------
# decomposition
# --------------------------------------------------------------------------------------------
def decompose_days(obs: pd.DataFrame, days: list[pd.Timestamp], params: DecompositionParams) -> pd.DataFrame:
    """Forecast-residual decomposition of every observation in ``days``.

    ``obs`` holds entity_id, metric, ts, value for at least ``[days[0] - history_days, days[-1] + 1)``.
    Returns entity_id, metric, ts, value, expected, trend, seasonal, residual, residual_z for the
    observations inside ``days``; rows whose series lacks history have NULL expected etc.
    """
    cols = ["entity_id", "metric", "ts", "value", "expected", "trend", "seasonal", "residual", "residual_z"]
    if obs.empty or not days:
        return pd.DataFrame(columns=cols)
    obs = obs[["entity_id", "metric", "ts", "value"]]
    history = pd.Timedelta(days=params.history_days)
    out = []
    for day in days:
        # Everything about day D, the sampling interval included, is learnt from [D - history, D):
        # a backfill over many days and a nightly run of one day give the same answer.
        window = obs[(obs["ts"] >= day - history) & (obs["ts"] < day + DAY)]
        past = window[window["ts"] < day]
        interval = sampling_interval(past if len(past) else window)
        for step, entities in interval.groupby(interval).groups.items():
            group = window[window["entity_id"].isin(entities)]
            out += _decompose_group(group, int(step), day, params)
    if not out:
        return pd.DataFrame(columns=cols)
    return pd.concat(out, ignore_index=True)[cols]


def _decompose_group(obs, step, day, params):
    origin = day - pd.Timedelta(days=params.history_days)
    secs = _epoch_seconds(obs["ts"]) - origin.timestamp()
    g = np.rint(secs / step).astype(np.int64)
    keep = g >= 0
    obs, g = obs[keep], g[keep]
    series = pd.MultiIndex.from_arrays([obs["entity_id"].to_numpy(), obs["metric"].to_numpy()]).unique()
    code = series.get_indexer(pd.MultiIndex.from_arrays([obs["entity_id"].to_numpy(), obs["metric"].to_numpy()]))
    n_grid = int(g.max()) + 1
    dense = np.full((len(series), n_grid), np.nan)
    dense[code, g] = obs["value"].to_numpy(float)  # later duplicates on one grid cell win
    # The grid only aligns series for STL; rows keep their own timestamps (they may be off-grid).
    stamp = np.zeros((len(series), n_grid), dtype=np.int64)
    stamp[code, g] = obs["ts"].astype("datetime64[us, UTC]").astype("int64").to_numpy()
    per_day = 86_400 / step
    hist_n = int(np.ceil(params.history_days * per_day))
    min_hist = max(int(params.min_history_days * per_day), 8)
    observed = ~np.isnan(dense)
    first_obs = np.where(observed.any(axis=1), observed.argmax(axis=1), n_grid)
    frames = []
    g0 = int(np.ceil((day - origin).total_seconds() / step - 1e-9))
    g1 = n_grid  # ``obs`` ends with day D, so the grid does too
    if g1 <= g0:
        return frames
    today = observed[:, g0:g1] & (stamp[:, g0:g1] >= day.value // 1000)
    rows = np.flatnonzero(today.any(axis=1))
    if len(rows) == 0:
        return frames
    start = np.maximum(first_obs[rows], g0 - hist_n)
    expected = np.full((len(rows), g1 - g0), np.nan)
    trend, seasonal, scale = expected.copy(), expected.copy(), np.full(len(rows), np.nan)
    # observed points in [start, g0) per series, from a running count (no per-series loop)
    counted = np.concatenate([np.zeros((len(rows), 1), np.int64), observed[rows, :g0].cumsum(axis=1)], axis=1)
    n_obs_hist = counted[:, g0] - counted[np.arange(len(rows)), np.minimum(start, g0)]
    ok = n_obs_hist >= min_hist
    for s in np.unique(start[ok]):
        sel = np.flatnonzero(ok & (start == s))
        hist = pd.DataFrame(dense[rows[sel], s:g0].T).interpolate(limit_direction="both").to_numpy().T
        periods = seasonal_periods(step, g0 - s, params.periods)
        spread = np.nanpercentile(hist, 99, axis=1) - np.nanpercentile(hist, 1, axis=1)
        fc = forecast(hist, g1 - g0, periods, robust=params.robust, outer_iter=params.robust_passes,
                      min_scale=np.maximum(1e-3 * spread, 1e-9))
        expected[sel], trend[sel], seasonal[sel], scale[sel] = fc.expected, fc.trend, fc.seasonal, fc.scale
    r_idx, c_idx = np.nonzero(today[rows])
    value = dense[rows[r_idx], g0 + c_idx]
    exp_v = expected[r_idx, c_idx]
    ts_us = stamp[rows[r_idx], g0 + c_idx]
    frames.append(pd.DataFrame({
        "entity_id": series.get_level_values(0)[rows[r_idx]],
        "metric": series.get_level_values(1)[rows[r_idx]],
        "ts": pd.to_datetime(ts_us, unit="us", utc=True),
        "value": value,
        "expected": exp_v,
        "trend": trend[r_idx, c_idx],
        "seasonal": seasonal[r_idx, c_idx],
        "residual": value - exp_v,
        "residual_z": (value - exp_v) / scale[r_idx],
    }))
    return frames


# --------------------------------------------------------------------------------------------
# models and scores
# --------------------------------------------------------------------------------------------
@dataclass
class FleetModel:
    """Fitted detectors for one day: entity -> (metric names, detector)."""

    day: pd.Timestamp
    version: str
    params: DetectorParams
    train_start: pd.Timestamp
    detectors: dict[str, tuple[list[str], EntityDetector]] = field(default_factory=dict)
    cold_start: list[str] = field(default_factory=list)
    training_rows: int = 0


def _wide(features: pd.DataFrame, column: str) -> pd.DataFrame:
    # (entity, metric, ts) is unique in features.decomposition, so a plain unstack is exact.
    return features.set_index(["ts", "metric"])[column].unstack("metric").sort_index()


def fit_fleet(features: pd.DataFrame, day: pd.Timestamp, params: DetectorParams,
              entities: list[str] | None = None) -> FleetModel:
    """Fit one detector per entity on the decomposition rows of ``[day - training_days, day)``."""
    train_start = day - pd.Timedelta(days=params.training_days)
    model = FleetModel(day, params.version(day), params, train_start)
    window = features[(features["ts"] >= train_start) & (features["ts"] < day)]
    seen = set()
    for entity, rows in window.groupby("entity_id", sort=True):
        seen.add(entity)
        decomposed = rows[rows["residual_z"].notna()]
        span_days = (decomposed["ts"].max() - decomposed["ts"].min()) / DAY if len(decomposed) else 0.0
        if len(decomposed) == 0 or span_days < params.min_training_days or decomposed["ts"].nunique() < 16:
            model.cold_start.append(entity)
            continue
        # The value statistics and the tails use every observation of the window, also those
        # from before the decomposition had history (their residual reads as no deviation): on
        # SMD dropping them cut machine-2-1's best-F1 from 0.67 to 0.52.
        values, rz = _wide(rows, "value"), _wide(rows, "residual_z")
        det = params.detector().fit(values.to_numpy(), rz.to_numpy())
        model.detectors[entity] = (list(values.columns), det)
        model.training_rows += len(values)
    model.cold_start += sorted(set(entities or []) - seen)
    return model


def score_day(features: pd.DataFrame, model: FleetModel, families: dict[str, str] | None = None,
              units: dict[str, str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score the points of ``model.day``; earlier rows in ``features`` only prime the smoothing.

    Returns (anomaly_scores, explanations) frames in the warehouse's column order.
    """
    day, p = model.day, model.params
    scores, explanations = [], []
    for entity, rows in features.groupby("entity_id", sort=True):
        values, rz = _wide(rows, "value"), _wide(rows, "residual_z")
        ts = values.index
        is_today = (ts >= day) & (ts < day + DAY)
        if not is_today.any():
            continue
        today_ts = ts[is_today]
        if entity not in model.detectors:
            scores.append(pd.DataFrame({"entity_id": entity, "ts": today_ts, "anomaly_score": np.nan,
                                        "is_anomaly": False, "severity": "cold_start", "why": None,
                                        "model_version": model.version}))
            continue
        metrics, det = model.detectors[entity]
        first = int(np.argmax(is_today))
        lo = max(0, first - p.warmup_points)
        values = values.reindex(columns=metrics).iloc[lo:]
        rz = rz.reindex(columns=metrics).iloc[lo:]
        parts = det.score_parts(values.to_numpy(), rz.to_numpy(), warmup=first - lo)
        sev = severity(parts.anomaly_score, p.warning_p, p.critical_p)
        flagged = sev != "normal"
        why = np.full(len(sev), None, dtype=object)
        if flagged.any():
            act = values.to_numpy()[first - lo:][flagged]
            exp_ = (values - _wide(rows, "residual").reindex(index=values.index, columns=metrics)
                    ).to_numpy()[first - lo:][flagged]
            # metrics ranked by their recent deviation, smoothed like the evidence (warm-up included)
            recent = smoothed_deviation(det.score_parts(values.to_numpy(), rz.to_numpy()).deviation,
                                        p.smoothing_alphas[0])[first - lo:]
            frame, why_f = explain(entity, today_ts[flagged].to_numpy(), metrics, parts.deviation[flagged],
                                   act, exp_, families, units, rank_by=recent[flagged])
            why[flagged] = why_f
            explanations.append(frame)
        scores.append(pd.DataFrame({"entity_id": entity, "ts": today_ts, "anomaly_score": parts.anomaly_score,
                                    "is_anomaly": flagged, "severity": sev, "why": why,
                                    "model_version": model.version}))
    s_cols = ["entity_id", "ts", "anomaly_score", "is_anomaly", "severity", "why", "model_version"]
    e_cols = ["entity_id", "ts", "metric", "rank", "contribution", "family", "expected", "actual"]
    s = pd.concat(scores, ignore_index=True)[s_cols] if scores else pd.DataFrame(columns=s_cols)
    e = pd.concat(explanations, ignore_index=True)[e_cols] if explanations else pd.DataFrame(columns=e_cols)
    return s, e
