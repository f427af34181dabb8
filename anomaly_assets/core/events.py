"""Known events other than holidays: promotions, peaks, closures from ``calendar.csv``.

A business moves its numbers on purpose on such days: a price promotion lifts a SKU's sales
1.5-2.5 times for a week, a chain sale a little less. Against a baseline that does not know
them, every such day is an anomaly, and, left in the reference, they inflate the residual scale
and the tails that every other day is judged by. Here, for each series:

- the event points stay out of the calendar effects, the level, the scale and the calibration
  of the reference (as points judged anomalous do, but always: they are not the series' normal);
- with at least ``least`` (3) of them in its reference, the **event effect** is the median of
  their residuals against the calendar baseline (in the transformed scale, so a log-transformed
  series learns a lift), added to the expected value on event days;
- the **event spread** is their robust spread around it (MAD, with a small-sample inflation as
  for the scale): an event day is judged against the larger of it and the series' scale, since
  lifts differ from event to event.

One effect serves every kind: a series' events are mostly of one kind (a SKU's promotions), and
a median is not moved by the few of another. Holidays keep their own calendar component
(``core/calendar.py``). A series whose event points are more than ``most`` of its usable
reference keeps them in: they are what it usually does.
"""

from __future__ import annotations

import numpy as np

from anomaly_assets.core.nanstats import nanmedian

_MAD = 1.4826


def reference_points(event: np.ndarray, raw: np.ndarray, left_out: np.ndarray, most: float = 0.5) -> np.ndarray:
    """The points of known events a reference leaves out.

    Parameters
    ----------
    event : ndarray of bool, shape (E, n)
        Event days of the reference points.
    raw : ndarray of shape (E, n, m)
        Reference values, NaN where missing.
    left_out : ndarray of bool, shape (E, n, m)
        Points already left out (judged anomalous).
    most : float
        Largest share of a series' usable reference its event points may be.

    Returns
    -------
    ndarray of bool, shape (E, n, m)
    """
    on = event[:, :, None] & ~np.isnan(raw)
    usable = (~np.isnan(raw) & ~left_out).sum(axis=1)
    return on & (on.sum(axis=1) <= most * usable)[:, None, :]


def effect(residual: np.ndarray, on: np.ndarray, flagged: np.ndarray | None = None,
           least: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The event effect and spread of each series.

    Parameters
    ----------
    residual : ndarray of shape (E, n, m)
        Reference residuals against the calendar baseline (transformed scale).
    on : ndarray of bool, shape (E, n, m)
        The reference's event points.
    flagged : ndarray of bool, shape (E, n, m), optional
        Points judged anomalous: left out while at least ``least`` event points remain. A
        series' first events were scored without their effect and flagged for the lift itself;
        left out for good, a one-day event would never be learnt.
    least : int
        Fewest event points a series needs; with fewer, its effect and spread are 0.

    Returns
    -------
    effect, spread : ndarray of shape (E, m)
    """
    if flagged is not None:
        clean = on & ~flagged
        on = np.where((clean.sum(axis=1) >= least)[:, None, :], clean, on)
    n = on.sum(axis=1)
    r = np.where(on, residual, np.nan)
    med = np.nan_to_num(nanmedian(r))
    spread = _MAD * np.nan_to_num(nanmedian(np.abs(r - med[:, None, :]))) * (1 + 1 / np.sqrt(np.maximum(n - 1, 1)))
    ok = n >= least
    return np.where(ok, med, 0.0), np.where(ok, spread, 0.0)


def scale_on(scale: np.ndarray, spread: np.ndarray | None, event: np.ndarray | None, shape) -> np.ndarray:
    """The scale each new point is judged by, shape ``shape`` (E, T, m): the series' scale (E, m),
    or on an event day (``event``, (E, T) bool) the larger of it and the event spread."""
    out = np.broadcast_to(scale[:, None, :], shape)
    if event is None or spread is None:
        return out
    return np.where(np.asarray(event, bool)[:, :, None], np.maximum(scale, spread)[:, None, :], out)
