"""Peer groups (same site or tag) and how far an entity departs from its peers at a time."""

from __future__ import annotations

import numpy as np
import pandas as pd

from anomaly_assets.core.rules.inputs import MAD_FLOOR, RuleInputs, map_distinct


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
    d = d.assign(group=map_distinct(d["entity_id"], group)).dropna(subset=["group", "residual_z"])
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



def _at_points(df: pd.DataFrame, points: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``df`` at the (entity_id, ts) of ``points``, in their order in ``df``."""
    near = df[df["entity_id"].isin(points["entity_id"].unique()) & df["ts"].isin(points["ts"])]
    keys = pd.MultiIndex.from_arrays([points["entity_id"], points["ts"]])
    return near[pd.MultiIndex.from_arrays([near["entity_id"], near["ts"]]).isin(keys)]


