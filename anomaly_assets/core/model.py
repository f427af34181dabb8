"""A fitted detector as data: what scoring a series' next points needs, carried from day to day.

A refit (``core/detector.py``) learns, for each entity of a batch, the baseline (level and
calendar effects), the transform, the residual scale, each metric's tail, the evidence model
(PCA mean and projector), the tails of the evidence statistics and the gamma laws of the smoothed
surprises. These **fitted parts** change only at a refit. The **running parts** change with every
scored point: the EWMA states of the smoothed surprises and of the explanations' ranking, the
time of the last point, and whether the last day drifted. Between refits the level also follows
the series: after each day it moves ``carry_level`` of the way to the median residual of the
day's points that were not left out (``core/detector.py``), as a refit's reference would.

Scoring a day from the model of the day before and then carrying it on gives exactly the numbers
of scoring it right after the refit: the EWMAs are causal and the fitted parts do not move.

**When a series is refitted** (:func:`refit_reasons`), one reason per series:

- ``new``: no model yet (a new series, or a changed detector or code version);
- ``warm-up``: the reference of the last refit spanned less than ``refit_days``, and the series
  has since seen at least as much time again (refits double the reference: days 1, 2, 4, ...);
- ``drift``: on its last day a point was left out of references (a deviation that may persist:
  the acceptance rules must see it, and a stale model would keep flagging a new normal);
- ``cadence``: the series' slot in the ``refit_days`` cycle (a hash of its name, so a fleet that
  started together spreads its refits over the nights), or ``refit_days`` since the last refit;
- ``backend``: the backend's fitted objects are not data (iforest, ecod, hbos): refitted daily.

With ``refit_days`` 1 (the default) every series is refitted every day, once: the model fitted
before a day's first point carries through that day's later micro-batches, since the same
history gives the same model.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from anomaly_assets.core import baseline as bl
from anomaly_assets.core import calendar, calibration as cal, evidence as ev
from anomaly_assets.core.transform import Transform

DAY_S = 86_400
REASONS = ("", "new", "warm-up", "drift", "cadence", "backend")


@dataclass
class Model:
    """A batch's fitted detector, leading axis E (entities); ``m`` metrics."""

    fitted_at: np.ndarray  # (E,) epoch s of the first point the refit scored
    seen: np.ndarray  # (E,) seconds the reference spanned
    reference_points: np.ndarray  # (E,)
    baseline: bl.Baseline
    transform: Transform
    scale: np.ndarray  # (E, m) residual scale, in the transformed units
    mtail: cal.Tail | None  # each metric's tail, (E*m,)
    evidence: ev.EvidenceModel
    tails: list  # [Tail (E,)] per evidence statistic
    gammas: list  # [Gamma (E,) or None] per smoothing alpha (None: alpha 1)
    warm: np.ndarray  # (E,) too few out-of-sample points to calibrate: the warm-up's t law
    probation: np.ndarray  # (E,)
    n_ref: np.ndarray  # (E,) reference points with a value
    settled: np.ndarray  # (E,) every metric's reference (nearly) as long as it gets (core/selection.py)
    band_z: np.ndarray  # (E, m) single-metric |z| that makes a warning
    valid: np.ndarray  # (E, m) series with enough points to be scored
    smooth: np.ndarray  # (E, n_alphas) EWMA state of each smoothed surprise (NaN: alpha 1)
    rank: np.ndarray  # (E, m) EWMA state of the squared deviations that rank metrics
    drift: np.ndarray  # (E,) the last scored day left a point out of references
    last_ts: np.ndarray  # (E,) epoch s of the last scored point

    @property
    def storable(self) -> bool:
        """Whether the model is plain data (the robust backend) and can be kept between runs."""
        return self.evidence.fitted is None

    def take(self, idx) -> "Model":
        """The model of entities ``idx`` (in that order)."""
        idx = np.asarray(idx, np.int64)
        E, m = self.scale.shape
        b = self.baseline
        base = bl.Baseline(b.level[idx], {c: e[idx] for c, e in b.effects.items()}, b.kept[:, idx],
                           b.nonnegative[idx], b.interval, b.day_bins, b.spread[idx],
                           *(None if a is None else a[idx] for a in (b.event, b.event_spread)))
        tf = Transform(self.transform.on[idx], self.transform.c[idx])
        mt = None
        if self.mtail is not None:
            mt = cal.Tail(self.mtail.u.reshape(E, m)[idx].ravel(), self.mtail.beta.reshape(E, m)[idx].ravel(),
                          self.mtail.q)
        e = self.evidence
        evm = ev.EvidenceModel(e.backend, e.names, None if e.pca_mean is None else e.pca_mean[idx],
                               None if e.pca_residual is None else e.pca_residual[idx],
                               None if e.fitted is None else [e.fitted[i] for i in idx])
        kw = {f.name: getattr(self, f.name)[idx] for f in fields(self) if f.name not in _STRUCTURED}
        return Model(baseline=base, transform=tf, mtail=mt, evidence=evm,
                     tails=[cal.Tail(t.u[idx], t.beta[idx], t.q) for t in self.tails],
                     gammas=[None if g is None else cal.Gamma(g.k[idx], g.theta[idx]) for g in self.gammas], **kw)


_STRUCTURED = ("baseline", "transform", "mtail", "evidence", "tails", "gammas")


def concat(models: list[Model]) -> Model:
    """Entities of several models of the same shape (metrics, interval, statistics) stacked."""
    if len(models) == 1:
        return models[0]
    first = models[0]
    cat = lambda get, axis=0: np.concatenate([get(x) for x in models], axis=axis)  # noqa: E731
    b0 = first.baseline
    effects = {}
    for c in calendar.COMPONENTS:
        have = [x.baseline.effects.get(c) for x in models]
        if any(h is not None for h in have):
            shape = next(h for h in have if h is not None).shape[1:]
            effects[c] = np.concatenate([h if h is not None else np.zeros((len(x.scale),) + shape)
                                         for h, x in zip(have, models)])
    events = [cat(lambda x, n=n: _or_zeros(getattr(x.baseline, n), x.scale))
              if any(getattr(x.baseline, n) is not None for x in models) else None for n in ("event", "event_spread")]
    base = bl.Baseline(cat(lambda x: x.baseline.level), effects, cat(lambda x: x.baseline.kept, 1),
                       cat(lambda x: x.baseline.nonnegative), b0.interval, b0.day_bins,
                       cat(lambda x: x.baseline.spread), *events)
    tf = Transform(cat(lambda x: x.transform.on), cat(lambda x: x.transform.c))
    mt = None if first.mtail is None else cal.Tail(cat(lambda x: x.mtail.u), cat(lambda x: x.mtail.beta), first.mtail.q)
    e0 = first.evidence
    evm = ev.EvidenceModel(e0.backend, e0.names,
                           None if e0.pca_mean is None else cat(lambda x: x.evidence.pca_mean),
                           None if e0.pca_residual is None else cat(lambda x: x.evidence.pca_residual),
                           None if e0.fitted is None else [f for x in models for f in x.evidence.fitted])
    tails = [cal.Tail(cat(lambda x: x.tails[k].u), cat(lambda x: x.tails[k].beta), t.q) for k, t in enumerate(first.tails)]
    gammas = [None if g is None else cal.Gamma(cat(lambda x: x.gammas[k].k), cat(lambda x: x.gammas[k].theta))
              for k, g in enumerate(first.gammas)]
    kw = {f.name: cat(lambda x, n=f.name: getattr(x, n)) for f in fields(Model) if f.name not in _STRUCTURED}
    return Model(baseline=base, transform=tf, mtail=mt, evidence=evm, tails=tails, gammas=gammas, **kw)


def compatible_key(model: Model) -> tuple:
    """Models with equal keys can be stacked by :func:`concat`."""
    return (model.scale.shape[1], model.baseline.interval, model.baseline.day_bins, model.evidence.backend,
            model.evidence.names, model.mtail is None, model.evidence.pca_mean is None, len(model.gammas))


def refit_reasons(model: Model | None, n: int, now_s: int, slots: np.ndarray, refit_days: int,
                  has_model: np.ndarray | None = None) -> np.ndarray:
    """Why each of ``n`` series must be refitted before scoring from ``now_s`` (codes into
    :data:`REASONS`; 0: carry the model on).

    Parameters
    ----------
    model : Model or None
        The series' current models (E = n), or None when none has one.
    n : int
    now_s : int
        Epoch seconds of the day's start.
    slots : ndarray of int, shape (n,)
        Each series' slot in the ``refit_days`` cycle.
    refit_days : int
        Days between scheduled refits; 1 refits every day.
    has_model : ndarray of bool, shape (n,), optional
        Which series have a model (default: all, when ``model`` is given).

    Returns
    -------
    ndarray of int8, shape (n,)
    """
    out = np.full(n, REASONS.index("new"), np.int8)
    if model is None:
        return out
    has = np.ones(n, bool) if has_model is None else has_model
    age = now_s - model.fitted_at
    young = model.seen < refit_days * DAY_S
    slot_day = (now_s // DAY_S + slots) % max(refit_days, 1) == 0
    reason = np.zeros(n, np.int8)
    reason[(age >= DAY_S) & (slot_day | (age >= refit_days * DAY_S))] = REASONS.index("cadence")
    reason[young & (age >= np.maximum(model.seen, DAY_S))] = REASONS.index("warm-up")
    reason[model.drift] = REASONS.index("drift")
    if not model.storable:
        reason[:] = REASONS.index("backend")
    if refit_days <= 1:  # refitted daily: only a model fitted for this very day carries (micro-batches)
        reason = np.where((reason == 0) & (model.fitted_at < now_s), REASONS.index("cadence"), reason).astype(np.int8)
    return np.where(has, reason, out).astype(np.int8)


def _or_zeros(a, like):
    return np.zeros_like(like) if a is None else a


# -- as data: one row per entity ----------------------------------------------------------------
_SCALARS = ("fitted_at", "seen", "reference_points", "warm", "probation", "n_ref", "settled", "drift", "last_ts")
_PER_METRIC = ("scale", "band_z", "valid", "rank")


def _arrays(model: Model) -> dict[str, np.ndarray]:
    """Every array of the model as (E, k) float64, by column name."""
    E, m = model.scale.shape
    b = model.baseline
    out = {n: np.asarray(getattr(model, n), float).reshape(E, -1) for n in _PER_METRIC}
    out.update(level=b.level, nonnegative=b.nonnegative, spread=b.spread, kept=b.kept.transpose(1, 0, 2),
               event=_or_zeros(b.event, model.scale), event_spread=_or_zeros(b.event_spread, model.scale),
               tf_on=model.transform.on, tf_c=model.transform.c, smooth=model.smooth,
               tail_u=np.stack([t.u for t in model.tails], axis=1), tail_beta=np.stack([t.beta for t in model.tails], axis=1),
               gamma_k=np.stack([np.full(E, np.nan) if g is None else g.k for g in model.gammas], axis=1),
               gamma_theta=np.stack([np.full(E, np.nan) if g is None else g.theta for g in model.gammas], axis=1))
    if model.mtail is not None:
        out.update(mtail_u=model.mtail.u.reshape(E, m), mtail_beta=model.mtail.beta.reshape(E, m))
    if model.evidence.pca_mean is not None:
        out.update(pca_mean=model.evidence.pca_mean, pca_residual=model.evidence.pca_residual)
    for c in calendar.COMPONENTS:  # every component, zeros where not kept: rows of one shape stack
        nb = calendar.bins(np.zeros(1, np.int64), b.interval, c, b.day_bins)[1]
        out[f"effect_{c}"] = b.effects[c] if c in b.effects else np.zeros((E, nb, m))
    return {k: np.asarray(v, float).reshape(E, -1) for k, v in out.items()}


def to_table(model: Model, entities, metrics) -> pa.Table:
    """The model as an Arrow table, one row per entity (lossless: float64 throughout).

    Parameters
    ----------
    model : Model
        A storable model (:attr:`Model.storable`).
    entities : sequence of str, length E
    metrics : sequence of str, length m

    Returns
    -------
    pyarrow.Table
    """
    if not model.storable:
        raise ValueError(f"the {model.evidence.backend} backend's model is not plain data and cannot be stored")
    E, m = model.scale.shape
    cols = {"entity_id": pa.array([str(e) for e in entities], pa.string()),
            "metrics": pa.array([list(map(str, metrics))] * E, pa.list_(pa.string())),
            "interval": pa.array(np.full(E, model.baseline.interval)),
            "day_bins": pa.array(np.full(E, model.baseline.day_bins, np.int64)),
            "statistics": pa.array([",".join(model.evidence.names)] * E, pa.string()),
            "tail_q": pa.array(np.full(E, model.tails[0].q if model.tails else np.nan))}
    for n in _SCALARS:
        cols[n] = pa.array(np.asarray(getattr(model, n), float))
    arrays = _arrays(model)
    for name in _LIST_COLUMNS:
        a = arrays.get(name)
        k = 0 if a is None else a.shape[1]
        flat = np.zeros(0) if a is None else a.ravel()
        cols[name] = pa.ListArray.from_arrays(pa.array(np.arange(E + 1, dtype=np.int32) * k), pa.array(flat, pa.float64()))
    return pa.table(cols)


_LIST_COLUMNS = ("scale", "band_z", "valid", "rank", "level", "nonnegative", "spread", "event", "event_spread",
                 "kept", "tf_on", "tf_c",
                 "smooth", "tail_u", "tail_beta", "gamma_k", "gamma_theta", "mtail_u", "mtail_beta", "pca_mean",
                 "pca_residual", *(f"effect_{c}" for c in calendar.COMPONENTS))


def from_table(table: pa.Table) -> list[tuple[np.ndarray, list[str], Model]]:
    """Models back from :func:`to_table`'s rows: one (entities, metrics, Model) per shape."""
    if table.num_rows == 0:
        return []
    keys = ["metrics", "interval", "day_bins", "statistics", "has_pca", "has_mtail"]
    meta = table.select(keys[:4]).to_pandas()
    meta["metrics"] = meta["metrics"].map(tuple)
    meta["has_pca"] = pc.list_value_length(table["pca_mean"]).to_numpy() > 0
    meta["has_mtail"] = pc.list_value_length(table["mtail_u"]).to_numpy() > 0
    out = []
    for key, rows in meta.groupby(keys, sort=False).groups.items():
        sub = table.take(pa.array(np.asarray(rows, np.int64)))
        out.append((sub["entity_id"].to_numpy(zero_copy_only=False).astype(object), list(key[0]),
                    _model_of(sub, len(key[0]), float(key[1]), int(key[2]), tuple(key[3].split(",")))))
    return out


def _model_of(sub: pa.Table, m: int, interval: float, day_bins: int, names: tuple) -> Model:
    E = sub.num_rows

    def lst(name, width=None):
        flat = pc.list_flatten(sub[name]).to_numpy(zero_copy_only=False).astype(float)
        if flat.size == 0:
            return None
        return flat.reshape(E, -1) if width is None else flat.reshape(E, width, -1)

    # a column added since a table was written (absent, or null where joined to newer rows) reads
    # as zeros (settled: a choice is not kept)
    sc = {n: pc.fill_null(sub[n], 0).to_numpy().astype(float) if n in sub.column_names else np.zeros(E)
          for n in _SCALARS}
    q = float(sub["tail_q"][0].as_py())
    effects = {}
    for c in calendar.COMPONENTS:  # a component no series keeps adds nothing: leave it out
        eff = lst(f"effect_{c}")
        if eff is not None and eff.any():
            effects[c] = eff.reshape(E, -1, m)
    base = bl.Baseline(lst("level"), effects, lst("kept").reshape(E, -1, m).transpose(1, 0, 2).astype(bool),
                       lst("nonnegative").astype(bool), interval, day_bins, lst("spread"), lst("event"),
                       lst("event_spread"))
    mu, mb = lst("mtail_u"), lst("mtail_beta")
    pca_mean, pca_res = lst("pca_mean"), lst("pca_residual")
    tu, tb = lst("tail_u"), lst("tail_beta")
    gk, gt = lst("gamma_k"), lst("gamma_theta")
    return Model(
        fitted_at=sc["fitted_at"].astype(np.int64), seen=sc["seen"], reference_points=sc["reference_points"].astype(np.int64),
        baseline=base, transform=Transform(lst("tf_on").astype(bool), lst("tf_c")), scale=lst("scale"),
        mtail=None if mu is None else cal.Tail(mu.ravel(), mb.ravel(), q),
        evidence=ev.EvidenceModel("robust", names, pca_mean, None if pca_res is None else pca_res.reshape(E, m, m)),
        tails=[cal.Tail(tu[:, k], tb[:, k], q) for k in range(tu.shape[1])],
        gammas=[None if np.isnan(gk[:, k]).all() else cal.Gamma(gk[:, k], gt[:, k]) for k in range(gk.shape[1])],
        warm=sc["warm"].astype(bool), probation=sc["probation"].astype(bool), n_ref=sc["n_ref"].astype(np.int64),
        settled=sc["settled"].astype(bool),
        band_z=lst("band_z"), valid=lst("valid").astype(bool), smooth=lst("smooth"), rank=lst("rank"),
        drift=sc["drift"].astype(bool), last_ts=sc["last_ts"].astype(np.int64))
