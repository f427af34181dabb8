"""The reference a detector refits on: which past points, and which of them are left out.

A metric of a flagged point that deviates by at least ``exclude_z`` is marked left out, so a
sustained drop is measured against the level before it. Three rules keep this from running away
(parameters of ``DetectorParams``):

- ``accept``: a run of left-out points longer than ``accept_days`` (and ``accept_points``) is the
  new normal from its start on;
- ``recurrent``: what recurs (more than ``recurrent_runs`` separate left-out stretches) is let
  back in;
- ``cap``: at most ``max_excluded`` of a reference is left out (the first ones).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from anomaly_assets.core.calendar import DAY_S

if TYPE_CHECKING:
    from anomaly_assets.core.detector import DetectorParams


def span(interval: float, p: DetectorParams) -> float:
    """How far back (seconds) a reference reaches: ``reference_days``, or ``reference_points``
    samples if longer."""
    return max(p.reference_days * DAY_S, p.reference_points * interval)


def window(all_ts: np.ndarray, excl: np.ndarray, start: int, interval: float,
           p: DetectorParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference window before ``start``: positions ``idx`` (n,), the left-out mask
    (E, n, m) after the acceptance rules, and per series the position in ``idx`` from which the
    level is measured (E, m): the start of the latest accepted new normal, else 0."""
    reach = span(interval, p)
    lo = max(0, start - p.max_reference_points)
    lo = lo + int(np.searchsorted(all_ts[lo:start], all_ts[start] - reach, side="left"))
    idx = np.arange(lo, start)
    out = excl[:, idx, :].copy()
    E, n, m = out.shape
    level_from = np.zeros((E, m), np.int64)
    if out.any():
        out, level_from = accept(out, all_ts[idx], max(p.accept_days * DAY_S, p.accept_points * interval))
        if p.recurrent_runs:
            out = recurrent(out, p.recurrent_runs)
        out = cap(out, p.max_excluded)
    return idx, out, level_from


def accept(excl: np.ndarray, ts: np.ndarray, after_s: float) -> tuple[np.ndarray, np.ndarray]:
    """A deviation that persists is the new normal.

    A left-out point is let back in when at least half of the points in the ``after_s`` seconds
    after it were left out too (and that horizon lies inside the reference). The level is then
    measured from the first such point of the latest persistent stretch on.
    """
    E, n, m = excl.shape
    flat = excl.transpose(0, 2, 1).reshape(E * m, n)
    ahead = np.searchsorted(ts, ts + after_s, side="right")  # first position past each horizon
    complete = ts + after_s <= ts[-1]
    csum = np.concatenate([np.zeros((E * m, 1), np.int64), np.cumsum(flat, axis=1)], axis=1)
    pos = np.arange(n)
    share = (csum[:, ahead] - csum[:, pos + 1]) / np.maximum(ahead - pos - 1, 1)
    accepted = flat & complete[None, :] & (share >= 0.5)
    # the latest stretch: accepted points after the last normal point before the newest accepted one
    newest = np.where(accepted, pos[None, :], -1).max(axis=1)
    normal_before = np.where(~flat & (pos[None, :] < newest[:, None]), pos[None, :], -1).max(axis=1)
    stretch = np.where(accepted & (pos[None, :] > normal_before[:, None]), pos[None, :], n).min(axis=1)
    level_from = np.where(newest >= 0, stretch, 0)
    left = (flat & ~accepted).reshape(E, m, n).transpose(0, 2, 1)
    return left, np.minimum(level_from, n - 1).reshape(E, m)


def recurrent(excl: np.ndarray, runs: int) -> np.ndarray:
    """What recurs is normal: a series whose left-out points form more than ``runs`` separate
    stretches in its reference (a slow mover's every sale) gets them all back."""
    starts = excl & ~np.concatenate([np.zeros_like(excl[:, :1]), excl[:, :-1]], axis=1)
    return excl & ~(starts.sum(axis=1) > runs)[:, None, :]


def cap(excl: np.ndarray, share: float) -> np.ndarray:
    """At most ``share`` of a series' reference left out: the first left-out points stay out,
    later ones are let back in (the likeliest start of a new normal)."""
    E, n, m = excl.shape
    cap = int(share * n)
    if (excl.sum(axis=1) <= cap).all():
        return excl
    return excl & (np.cumsum(excl, axis=1) <= cap)
