"""A fleet's rows through the detector, day by day: tidy frames in, tidy frames out.

The asset layer hands :func:`detect_days` the rows of a chunk of entities: their observations
over the days to score and the reference window before them, with what earlier runs stored for
that window (each point's out-of-sample residual and whether it was left out of references). It
writes back what comes out. Days are scored in order and each day's outputs join the history of
the next, so a range run equals the sequence of nightly runs (``tests/core/test_fleet.py``).

Entities are scored together, in one array, when they share a timeline and metrics over a day's
window; an entity with a timeline of its own (gaps, a late start, other metrics) is a batch of its
own. A large group is cut into batches of a bounded size: an entity scores as it would alone (up
to rounding), so the cut changes only the speed. No Python loop runs over points or metrics.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.special import ndtri

from anomaly_assets.core import calibration as cal
from anomaly_assets.core import model as md
from anomaly_assets.core.detector import DAY_S, DetectorParams, History, detect, fast_alpha, interval_before
from anomaly_assets.core.explain import explain
from anomaly_assets.core.selection import Selections, record as record_selection
from anomaly_assets.core.state import FleetState

CODE_VERSION = "2026.12.8.8"  # bump when a change alters results for the same data and parameters
DAY = pd.Timedelta(days=1)
_US = 1_000_000
_KEY = 1 << 32  # (entity, day) keys of _event_masks
# a batch's (entities x points x metrics) at most: the fit's many temporaries then stay in cache
# and in the heap, not mapped and zeroed by the kernel each time (benchmarks/RESULTS.md)
_BATCH_VALUES = 1 << 19

DECOMPOSITION_COLUMNS = ["entity_id", "metric", "ts", "value", "expected", "lower", "upper", "trend", "seasonal",
                         "residual", "residual_z", "excluded"]
SCORE_COLUMNS = ["entity_id", "ts", "anomaly_score", "is_anomaly", "severity", "why", "model_version"]
EXPLANATION_COLUMNS = ["entity_id", "ts", "metric", "rank", "contribution", "family", "expected", "actual"]
PARAM_COLUMNS = ["entity_id", "metric", "level", "scale", "band_z", "components", "log_scale", "reference_points"]


def days_in(start: pd.Timestamp, end: pd.Timestamp) -> list[pd.Timestamp]:
    """UTC midnights in [start, end)."""
    return list(pd.date_range(start.floor("D"), end - pd.Timedelta(microseconds=1), freq="D", tz="UTC").floor("D").unique())


def history_days(params: DetectorParams, interval_s: float = 3_600.0) -> float:
    """Days of history a day's scoring reads for series sampled every ``interval_s`` seconds."""
    return max(params.reference_days, params.reference_points * interval_s / DAY_S) + 1.0


@dataclass
class DayModel:
    """What one day's scoring fitted: a summary row for ``ml.model_versions`` and per-series params."""

    day: pd.Timestamp
    version: str
    entities: int = 0
    cold_start_entities: int = 0
    reference_points: int = 0
    train_start: pd.Timestamp | None = None
    params: list[pd.DataFrame] = field(default_factory=list)
    refits: dict[str, int] = field(default_factory=dict)  # series refitted, by reason (core/model.py)
    carried: int = 0  # entities scored with the model they carried
    kept_selection: int = 0  # entities refitted with the calendar components they kept (core/selection.py)

    def series_params(self) -> pd.DataFrame:
        return pd.concat(self.params, ignore_index=True) if self.params else pd.DataFrame(columns=PARAM_COLUMNS)


@dataclass
class Detected:
    """Outputs of :func:`detect_days`: frames in the warehouse's column order, models per day."""

    decomposition: pd.DataFrame
    scores: pd.DataFrame
    explanations: pd.DataFrame
    models: dict[pd.Timestamp, DayModel]
    state: FleetState | None = None  # every entity's model after the last day
    opened: FleetState | None = None  # with keep_opened: the models fitted for the last day, before its points
    next_opened: FleetState | None = None  # with prefit_next: the next day's, before its predicted first points
    selections: Selections | None = None  # each series' kept calendar components after the last day


def model_version(params: DetectorParams, day: pd.Timestamp) -> str:
    blob = f"{params.version(CODE_VERSION)}:{day.date()}"
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class _Layout:
    """The chunk's rows as a table of (entity, ts) pairs x metrics, sorted by entity then time."""

    def __init__(self, rows: pd.DataFrame):
        e_codes, self.entities = _codes(rows["entity_id"])
        m_codes, self.metrics = _codes(rows["metric"])
        ts = _epoch_us(rows["ts"])
        order = np.lexsort((ts, e_codes))
        new_pair = np.ones(len(order), bool)
        new_pair[1:] = (np.diff(e_codes[order]) != 0) | (np.diff(ts[order]) != 0)
        pair_sorted = np.cumsum(new_pair) - 1
        pair_of_row = np.empty(len(order), np.int64)
        pair_of_row[order] = pair_sorted
        first = order[new_pair]
        self.pair_entity = e_codes[first]
        self.pair_ts = ts[first]
        n, m = len(first), len(self.metrics)
        self.value = np.full((n, m), np.nan)
        self.value[pair_of_row, m_codes] = rows["value"].to_numpy(float)
        self.residual = np.full((n, m), np.nan)
        self.excluded = np.zeros((n, m), bool)
        if "residual" in rows:
            self.residual[pair_of_row, m_codes] = rows["residual"].to_numpy(float, na_value=np.nan)
        if "excluded" in rows:
            self.excluded[pair_of_row, m_codes] = rows["excluded"].fillna(False).to_numpy(bool)
        self.bounds = np.searchsorted(self.pair_entity, np.arange(len(self.entities) + 1))

    def with_points(self, entities: np.ndarray, ts: np.ndarray) -> "_Layout":
        """A copy with a pair of no values at ``ts`` (each after its entity's last) for ``entities``
        (codes, ascending)."""
        at = self.bounds[entities + 1]
        out = object.__new__(_Layout)
        out.entities, out.metrics = self.entities, self.metrics
        out.pair_entity = np.insert(self.pair_entity, at, entities)
        out.pair_ts = np.insert(self.pair_ts, at, ts)
        out.value = np.insert(self.value, at, np.nan, axis=0)
        out.residual = np.insert(self.residual, at, np.nan, axis=0)
        out.excluded = np.insert(self.excluded, at, False, axis=0)
        out.bounds = np.searchsorted(out.pair_entity, np.arange(len(self.entities) + 1))
        return out


def _codes(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes into the sorted distinct values of ``col``, and those values."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        # from the category codes: the warehouse reads names as categoricals, and turning
        # millions of them back into strings to factorize was most of the layout's time
        cats = np.asarray(col.cat.categories.astype(str), dtype=object)
        codes = col.cat.codes.to_numpy().astype(np.int64)
        used = np.flatnonzero(np.bincount(codes[codes >= 0], minlength=len(cats)))
        names = cats[used]
        order = np.argsort(names, kind="stable")
        remap = np.full(len(cats), -1, np.int64)
        remap[used[order]] = np.arange(len(used))
        return np.where(codes >= 0, remap[np.maximum(codes, 0)], -1), names[order]
    codes, uniques = pd.factorize(col, sort=True)
    return codes.astype(np.int64), np.asarray(uniques, dtype=object)


def _epoch_us(ts: pd.Series) -> np.ndarray:
    return ts.dt.tz_convert("UTC").astype("datetime64[us, UTC]").astype("int64").to_numpy()


def detect_days(rows: pd.DataFrame, days: list[pd.Timestamp], params: DetectorParams,
                families: Mapping[str, str] | None = None, units: Mapping[str, str] | None = None,
                holidays: Mapping[str, np.ndarray] | None = None, state: FleetState | None = None,
                opened: FleetState | None = None, keep_opened: bool = False, prefit_next: bool = False,
                events: Mapping[str, np.ndarray] | None = None, selections: Selections | None = None) -> Detected:
    """Score every observation of ``days``, in order, from the rows before each day.

    Each entity is scored with the model it carries (``state``) unless it is due for a refit
    (``core/model.py``: new, warm-up, drift, cadence), which reads its reference from ``rows``.

    Parameters
    ----------
    rows : DataFrame
        entity_id, metric, ts, value for the days and their reference window; optionally
        residual and excluded, as stored for points before ``days[0]`` (NaN / False otherwise).
    days : list of Timestamp
        UTC midnights to score, ascending.
    params : DetectorParams
    families, units : mapping, optional
        Metric families and units for explanations.
    holidays : mapping, optional
        entity_id -> sorted int64 array of holiday days (days since epoch).
    state : FleetState, optional
        The entities' models at the end of the day before ``days[0]`` (none: every entity is
        refitted on its first day). It is carried on in place. Unused, and None in the result,
        when ``params.refit_days`` is 1: every model is refitted every day.
    opened : FleetState, optional
        With ``params.refit_days`` 1: the models an earlier run fitted for ``days[0]`` before its
        first point (``Detected.opened`` of a micro-batch of the same day, on the same history).
        The entities in it score that day with them instead of refitting (moving them on in place).
    keep_opened : bool, default False
        Return in ``Detected.opened`` the models fitted for the last day before its first point,
        with those of ``opened`` that were used.
    prefit_next : bool, default False
        With ``params.refit_days`` 1: also fit the models of the day after the last one, for each
        entity with points on the last day, before its *predicted* first point there (the next
        point of its sampling grid; its actual first, if ``rows`` hold that day's already), and
        return them in ``Detected.next_opened``
        (what ``opened`` takes when that day is scored). They depend only on the days scored
        here, and an entity whose first point turns out to be another one is refitted then.
    events : mapping, optional
        entity_id -> sorted int64 array of its other known event days (promotions, peaks,
        closures; days since epoch): each series learns one effect for them, and they stay out of
        its reference (``docs/detection.md``).
    selections : Selections, optional
        With ``params.select_days`` above 1: the calendar components each entity kept at its last
        choice (``core/selection.py``), as the day before ``days[0]`` left them (none: each
        chooses at its first refit). Carried on in place, and returned in ``Detected.selections``.
        The choices of the next day's models fitted ahead (``prefit_next``) are dated that day:
        :func:`core.selection.day_ends` leaves them to the run that scores with those models.

    Returns
    -------
    Detected
    """
    models = {d: DayModel(d, model_version(params, d)) for d in days}
    if selections is None and params.select_days > 1:
        selections = Selections(params.select_days)
    if params.refit_days > 1 and state is None:
        state = FleetState(params.version(CODE_VERSION))
    carry = state if params.refit_days > 1 else opened  # a model fitted for the day carries only that day
    kept = FleetState(params.version(CODE_VERSION)) if keep_opened and params.refit_days == 1 else None
    if len(rows) == 0 or not days:
        return Detected(_empty(DECOMPOSITION_COLUMNS), _empty(SCORE_COLUMNS), _empty(EXPLANATION_COLUMNS), models,
                        state, kept, selections=selections)
    lay = _Layout(rows)
    dec, sco, exp = [], [], []
    for day in days:
        d0 = day.value // 1000
        d1 = d0 + DAY_S * _US
        # entities that carry their model need none of their history: they are batched apart
        carried = _carried_batches(lay, d0, d1, params, holidays, carry, models[day]) if carry is not None else []
        skip = {int(e) for batch, _ in carried for e in batch.entities}
        work = [(b, None) for b in _batches(lay, d0, d1, params, holidays, skip)] + carried
        last = kept if day == days[-1] else None
        for batch, model in work:
            if last is not None and model is not None:  # keep the day's model used, before it moves on
                last.put(lay.entities[batch.entities], batch.metric_names(lay), model.take(np.arange(len(model.scale))))
            out = _score_batch(lay, batch, params, models[day], families, units, holidays, state, model, last,
                               counted=carry is not None, events=events, selections=selections)
            dec.append(out[0])
            sco.append(out[1])
            if len(out[2]):
                exp.append(out[2])
    nxt = _prefit(lay, days[-1], params, holidays, events, selections) if prefit_next and params.refit_days == 1 \
        else None
    return Detected(_concat(dec, DECOMPOSITION_COLUMNS), _concat(sco, SCORE_COLUMNS),
                    _concat(exp, EXPLANATION_COLUMNS), models, state, kept, nxt, selections)


def _prefit(lay: _Layout, last: pd.Timestamp, params: DetectorParams, holidays, events=None,
            selections: Selections | None = None) -> FleetState:
    """The models of the day after ``last``, fitted before each entity's predicted first point:
    a point with no values at the next step of its grid is added to the layout and scored, and
    the model fitted before it is kept (as a micro-batch keeps its day's)."""
    d1 = (last.value // 1000) + DAY_S * _US
    ents, at = [], []
    for e in range(len(lay.entities)):
        a, b = lay.bounds[e], lay.bounds[e + 1]
        if b == a or not d1 - DAY_S * _US <= lay.pair_ts[b - 1] < d1:
            continue
        grid = np.unique(lay.pair_ts[max(a, b - 2 * params.reference_points):b])  # in us: a 90.5 s grid stays one
        step = int(np.median(np.diff(grid))) if len(grid) > 1 else DAY_S * _US
        t = int(lay.pair_ts[b - 1]) + step * -(-(d1 - int(lay.pair_ts[b - 1])) // step)
        ents.append(e)
        at.append(t)
    out = FleetState(params.version(CODE_VERSION))
    if not ents:
        return out
    ahead = lay.with_points(np.array(ents), np.array(at, np.int64))
    scratch = DayModel(last + DAY, "")
    for batch in _batches(ahead, d1, d1 + DAY_S * _US, params, holidays):
        _score_batch(ahead, batch, params, scratch, None, None, holidays, None, None, out, events=events,
                     selections=selections)
    return out


def _empty(cols):
    return pd.DataFrame(columns=cols)


def _concat(parts, cols):
    return pd.concat(parts, ignore_index=True)[cols] if parts else _empty(cols)


@dataclass
class _Batch:
    entities: np.ndarray  # entity codes
    hist: np.ndarray  # (E, Th) pair positions of the history window
    new: np.ndarray  # (E, Tn) pair positions of the day
    metrics: np.ndarray  # metric codes; -1: a metric of a carried model with no rows in the chunk
    names: np.ndarray | None = None  # metric names (default: the layout's names of ``metrics``)

    def metric_names(self, lay: "_Layout") -> np.ndarray:
        return self.names if self.names is not None else lay.metrics[self.metrics]


def _batches(lay: _Layout, d0: int, d1: int, params: DetectorParams, holidays=None, skip=frozenset()):
    """Entities with points in [d0, d1) (but ``skip``), grouped by identical timeline, metrics and
    holidays over their window, in batches of at most ``_BATCH_VALUES`` values (or one entity)."""
    groups: dict = {}
    span_cap = params.max_reference_points
    for e in range(len(lay.entities)):
        if e in skip:
            continue
        a, b = lay.bounds[e], lay.bounds[e + 1]
        ts = lay.pair_ts[a:b]
        n0 = a + int(np.searchsorted(ts, d0))
        n1 = a + int(np.searchsorted(ts, d1))
        if n1 <= n0:
            continue
        interval = interval_before(lay.pair_ts[max(a, n0 - 2 * params.reference_points):n0] // _US,
                                   lay.pair_ts[n0:n1] // _US, params)
        w = int(history_days(params, interval) * DAY_S * _US)
        h0 = a + int(np.searchsorted(ts, d0 - w))
        h0 = max(h0, n0 - span_cap)
        present = ~np.isnan(lay.value[h0:n1]).all(axis=0)
        hol = holidays.get(lay.entities[e]) if holidays else None
        key = (n1 - h0, n1 - n0, present.tobytes(), lay.pair_ts[h0:n1].tobytes(),
               None if hol is None else hol.tobytes())
        groups.setdefault(key, []).append((e, h0, n0, n1))
    for (width, _, present, _, _), group in groups.items():
        metrics = np.flatnonzero(np.frombuffer(present, bool))
        step = max(1, _BATCH_VALUES // max(width * len(metrics), 1))
        for k in range(0, len(group), step):
            members = group[k:k + step]
            ents = np.array([x[0] for x in members])
            hist = np.array([np.arange(h0, n0) for _, h0, n0, _ in members]).reshape(len(members), -1)
            new = np.array([np.arange(n0, n1) for _, _, n0, n1 in members]).reshape(len(members), -1)
            yield _Batch(ents, hist, new, metrics)


def _score_batch(lay, batch: _Batch, params, model: DayModel, families, units, holidays, state: FleetState | None,
                 carried: md.Model | None, opened: FleetState | None = None, counted: bool = False, events=None,
                 selections: Selections | None = None):
    cols = batch.metrics
    ts_h = lay.pair_ts[batch.hist[0]] // _US
    ts_n = lay.pair_ts[batch.new[0]] // _US
    take = lambda a, pos, fill: _take(a, pos, cols, fill)  # noqa: E731
    hol_h = hol_n = None
    if holidays:
        # the entities of a batch share their holidays (they are part of the batch key)
        days_arr = holidays.get(lay.entities[batch.entities[0]])
        if days_arr is not None and len(days_arr):
            hol_h = np.isin(ts_h // DAY_S, days_arr)
            hol_n = np.isin(ts_n // DAY_S, days_arr)
    names = lay.entities[batch.entities]
    ev_h, ev_n = _event_masks(names, events, ts_h, ts_n)
    hist = History(ts_h, take(lay.value, batch.hist, np.nan), take(lay.residual, batch.hist, np.nan),
                   take(lay.excluded, batch.hist, False), hol_h, ev_h)
    value = take(lay.value, batch.new, np.nan)
    metric_names = batch.metric_names(lay)
    if carried is not None:
        if params.refit_days <= 1:  # the day's own models, fitted by an earlier run: the day's record
            start = int((carried.last_ts + carried.baseline.interval - carried.seen).min())
            _record_fit(model, carried, names, metric_names, start)
            if selections is not None:  # its choice, made from the same day before's choices as here
                day = int(ts_n[0] // DAY_S)
                selections.record(names, metric_names, carried.baseline.kept,
                                  selections.prior(names, metric_names, day)[1], carried.settled, day,
                                  carried.valid.any(axis=1))
        else:
            model.entities += int(carried.valid.any(axis=1).sum())
        s = detect(hist, ts_n, value, params, hol_n, model=carried, event=ev_n)
        model.carried += len(names)
    else:
        day = int(ts_n[0] // DAY_S)
        prior, given = selections.prior(names, metric_names, day) if selections is not None else (None, None)
        s = detect(hist, ts_n, value, params, hol_n, keep_start=opened is not None, event=ev_n, kept=prior,
                   kept_given=given)
        record_selection(selections, names, metric_names, s, day)
        model.kept_selection += int(s.kept_given.sum()) if s.kept_given is not None else 0
        _record(model, s, names, metric_names, ts_h)
        if opened is not None and s.start is not None:
            fitted = s.start.valid.any(axis=1)
            if fitted.any():
                opened.put(names[fitted], metric_names, s.start.take(np.flatnonzero(fitted)))
        if state is None and not counted:  # refitted every day (why, when counted: _carried_batches)
            model.refits["cadence"] = model.refits.get("cadence", 0) + len(names)
    if state is not None and s.model is not None:
        scored = ~np.isnan(s.p).all(axis=1)
        if scored.any():
            state.put(names[scored], metric_names, s.model if scored.all() else s.model.take(np.flatnonzero(scored)))
    # what the next days see
    pos_new = batch.new
    here = cols >= 0
    res_full = lay.residual[pos_new]
    res_full[:, :, cols[here]] = s.residual[:, :, here]
    lay.residual[pos_new] = res_full
    exc_full = lay.excluded[pos_new]
    exc_full[:, :, cols[here]] = s.excluded[:, :, here]
    lay.excluded[pos_new] = exc_full
    E, T, m = value.shape
    # decomposition: one row per observed (entity, metric, ts)
    obs = ~np.isnan(value)
    ei, ti, mi = np.nonzero(obs)
    ts_us = lay.pair_ts[pos_new]
    dec = pd.DataFrame({
        "entity_id": names[ei], "metric": metric_names[mi],
        "ts": pd.to_datetime(ts_us[ei, ti], unit="us", utc=True),
        "value": value[ei, ti, mi], "expected": s.expected[ei, ti, mi], "lower": s.lower[ei, ti, mi],
        "upper": s.upper[ei, ti, mi], "trend": s.level[ei, ti, mi], "seasonal": s.seasonal[ei, ti, mi],
        "residual": s.residual[ei, ti, mi], "residual_z": s.residual_z[ei, ti, mi],
        "excluded": s.excluded[ei, ti, mi],
    })
    # scores: one row per (entity, ts)
    p = s.p
    cold = np.isnan(p)
    sev = np.where(cold, "cold_start",
                   cal.severity(np.nan_to_num(s.p_alert, nan=1.0), params.warning_p, params.critical_p))
    score = np.where(cold, np.nan, cal.score_from_p(np.nan_to_num(p, nan=1.0)))
    flagged = (sev == "warning") | (sev == "critical")
    why = np.full((E, T), None, dtype=object)
    expl = _empty(EXPLANATION_COLUMNS)
    if flagged.any():
        gi, ti2 = np.nonzero(flagged)
        expl, why_f = explain("", pd.to_datetime(ts_us[gi, ti2], unit="us", utc=True).to_numpy(),
                              list(metric_names), np.nan_to_num(s.residual_z[gi, ti2]), value[gi, ti2],
                              s.expected[gi, ti2], families, units, rank_by=s.rank_by[gi, ti2],
                              memory=max(1, round(1 / fast_alpha(params))))
        expl["entity_id"] = np.repeat(names[gi], m)
        why[gi, ti2] = _with_driver(why_f, s, gi, ti2)
    sco = pd.DataFrame({
        "entity_id": np.repeat(names, T), "ts": pd.to_datetime(ts_us.ravel(), unit="us", utc=True),
        "anomaly_score": score.ravel(), "is_anomaly": flagged.ravel(), "severity": sev.ravel(),
        "why": pd.array(why.ravel(), dtype="str"), "model_version": model.version,
    })
    return dec, sco, expl


def _event_masks(names, events, ts_h, ts_n):
    """(E, T) masks of each entity's known event days at the history's and the new points'
    times (None, None when no entity of the batch has any): per entity, so events never split
    batches."""
    if not events or not any(n in events for n in names):
        return None, None
    # one lookup per batch: (entity, day) keys, days since the epoch being far below 2**32
    none = np.zeros(0, np.int64)
    keys = np.concatenate([e * _KEY + np.asarray(events.get(n, none), np.int64) for e, n in enumerate(names)])
    rows = np.arange(len(names), dtype=np.int64)[:, None] * _KEY
    return np.isin(rows + ts_h // DAY_S, keys), np.isin(rows + ts_n // DAY_S, keys)


def _take(a: np.ndarray, pos: np.ndarray, cols: np.ndarray, fill) -> np.ndarray:
    """``a[pos][:, :, cols]``, with ``fill`` in the columns of code -1."""
    out = a[pos][:, :, np.maximum(cols, 0)]
    if (cols < 0).any():
        out[:, :, cols < 0] = fill
    return out


def _carried_batches(lay: _Layout, d0: int, d1: int, params, holidays, state: FleetState,
                     day_model: DayModel) -> list[tuple[_Batch, md.Model]]:
    """The entities with points in [d0, d1) that score the day with the model they carry, as
    batches with their stacked models; why the others are refitted is counted in ``day_model``.

    Whether an entity carries its model is :meth:`FleetState.refit_reasons`'s answer from its
    first point and metrics today, as the asset asks it before reading history. Nothing here
    reads history, so a run that reads only the day for such entities scores them as one that
    reads everything.
    """
    spans = {}
    for e in range(len(lay.entities)):
        a, b = lay.bounds[e], lay.bounds[e + 1]
        ts = lay.pair_ts[a:b]
        n0, n1 = a + int(np.searchsorted(ts, d0)), a + int(np.searchsorted(ts, d1))
        if n1 > n0:
            spans[e] = (n0, n1)
    if not spans:
        return []
    codes = np.array(list(spans))
    names = lay.entities[codes]
    first_s = np.array([lay.pair_ts[spans[int(e)][0]] // _US for e in codes], np.int64)
    today = [lay.metrics[~np.isnan(lay.value[n0:n1]).all(axis=0)] for n0, n1 in (spans[int(e)] for e in codes)]
    reasons = state.refit_reasons(names, d0 // _US, params.refit_days, first_s, today)
    carry = np.flatnonzero(reasons == 0)
    groups: dict = {}
    for pos, model in (state.gather(names[carry]) if len(carry) else []):
        for k, i in enumerate(carry[pos]):
            n0, n1 = spans[int(codes[i])]
            metrics = state.metrics_of(names[i])
            hol = holidays.get(names[i]) if holidays else None
            key = (id(model), metrics, lay.pair_ts[n0:n1].tobytes(), None if hol is None else hol.tobytes())
            groups.setdefault(key, (model, []))[1].append((k, int(codes[i]), n0, n1))
    for r in np.unique(reasons[reasons > 0]):
        day_model.refits[md.REASONS[r]] = day_model.refits.get(md.REASONS[r], 0) + int((reasons == r).sum())
    code_of = {str(m): j for j, m in enumerate(lay.metrics)}
    out = []
    for (_, metrics, _, _), (model, members) in groups.items():
        rows = np.array([k for k, *_ in members])
        new = np.array([np.arange(n0, n1) for *_, n0, n1 in members])
        batch = _Batch(np.array([e for _, e, _, _ in members]), np.zeros((len(members), 0), np.int64), new,
                       np.array([code_of.get(m, -1) for m in metrics]), np.asarray(metrics, dtype=object))
        out.append((batch, model if len(rows) == len(model.scale) and (rows == np.arange(len(rows))).all()
                    else model.take(rows)))
    return out


_DRIVER_TEXT = {"rms": "; several metrics off together", "pca": "; the metrics' usual relation broken"}


def _with_driver(why: np.ndarray, s, gi, ti) -> np.ndarray:
    """The one-line why, saying so when the flag came from the metrics together, not one alone,
    or from a stretch of points, not this one (with how rare the stretch is: the point's own
    deviations, printed per metric, need not be)."""
    suffix = np.full(len(why), "", dtype=object)
    if s.statistics and s.driver is not None:
        names = np.asarray(s.statistics, dtype=object)
        drv = names[np.clip(s.driver[gi, ti], 0, len(names) - 1)]
        suffix = np.array([_DRIVER_TEXT.get(d, "") for d in drv], dtype=object)
    if s.span is not None:  # a stretch's evidence: the point's own statistic did not flag it
        span = s.span[gi, ti]
        sigma = -ndtri(np.clip(s.p[gi, ti], 1e-300, 1.0) / 2)
        suffix = np.array([f"; flagged for the recent stretch (about the last {n} points together), as rare as {z:.1f}σ"
                           if n > 1 else x for x, n, z in zip(suffix, span, sigma)], dtype=object)
    return np.array([w + x for w, x in zip(why, suffix)], dtype=object)


def _record(model: DayModel, s, names, metric_names, ts_h) -> None:
    """Add this batch's fitted series to the day's model summary (the last refit of the day)."""
    if not s.refits:
        model.cold_start_entities += len(names)
        return
    r = s.refits[-1]
    model.cold_start_entities += int((~r.valid.any(axis=1)).sum())
    _record_fit(model, r, names, metric_names, int(ts_h[0]) if len(ts_h) else int(r.fitted_at[0]))


def _record_fit(model: DayModel, r: md.Model, names, metric_names, start_s: int) -> None:
    """Add a fitted model's series (those it scores), parameters and training rows to the day's
    summary; ``start_s``: where its reference began (epoch s)."""
    E, m = r.scale.shape
    scored = r.valid.any(axis=1)
    model.entities += int(scored.sum())
    model.reference_points += int(r.reference_points[scored].sum())
    start = pd.Timestamp(start_s, unit="s", tz="UTC")
    model.train_start = start if model.train_start is None else min(model.train_start, start)
    comps = np.array([",".join(r.baseline.components_of(e, j)) for e in range(E) for j in range(m)], dtype=object)
    ev, mv = np.nonzero(np.ones((E, m), bool))
    keep = r.valid[ev, mv]
    model.params.append(pd.DataFrame({
        "entity_id": names[ev][keep], "metric": metric_names[mv][keep],
        "level": r.transform.inv(r.baseline.level[:, None, :])[:, 0, :][ev, mv][keep],
        "scale": r.scale[ev, mv][keep], "band_z": r.band_z[ev, mv][keep], "components": comps[keep],
        "log_scale": r.transform.on[ev, mv][keep], "reference_points": r.reference_points[ev][keep],
    }))
