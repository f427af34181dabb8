"""Evidence for an alert's peak hit: expected vs actual, σ, top metrics, family shares, peers, score."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from anomaly_assets.core.rules.inputs import RuleInputs, _us, _us1, _utc, map_distinct
from anomaly_assets.core.rules.peers import _at_points, peer_groups, peer_stats


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
            wanted = pd.MultiIndex.from_arrays([map_distinct(points["entity_id"], group), points["ts"]])
            peer_rows = at[pd.MultiIndex.from_arrays([map_distinct(at["entity_id"], group), at["ts"]]).isin(wanted)]
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
            order = np.argsort(-share, kind="stable")  # ties by metric name: RuleInputs sorts the rows
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


