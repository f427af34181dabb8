"""NaN-ignoring medians and quantiles along an axis, vectorized.

NumPy's ``nanmedian`` / ``nanquantile`` reduce an array that holds NaN row by row in Python; the
detector calls them on (entities x points x metrics) blocks every refit, so these sort once
(NaN sorts last) and pick each row's order statistics from its own non-NaN count.
"""

from __future__ import annotations

import numpy as np


def nanmedian(a: np.ndarray, axis: int = 1) -> np.ndarray:
    """Median along ``axis`` ignoring NaN (NaN where nothing is left), without warnings."""
    return masked_median(a, axis)


def masked_median(a: np.ndarray, axis: int) -> np.ndarray:
    """NaN-ignoring median by one sort (NaN sorts last), vectorized over the other axes."""
    a = np.asarray(a, float)
    if a.shape[axis] == 0:
        return np.full(np.delete(a.shape, axis), np.nan)
    n = np.expand_dims((~np.isnan(a)).sum(axis=axis), axis)
    s = np.sort(a, axis=axis)
    lo = np.take_along_axis(s, np.maximum((n - 1) // 2, 0), axis=axis)
    hi = np.take_along_axis(s, np.maximum(n // 2, 0), axis=axis)
    med = np.squeeze((lo + hi) / 2.0, axis=axis)
    return np.where(np.squeeze(n, axis=axis) > 0, med, np.nan)


def nanquantile(a: np.ndarray, q, axis: int = 1) -> np.ndarray:
    """``np.nanquantile(a, q, axis)`` (linear interpolation) by one vectorized sort.

    NumPy reduces a NaN-holding array row by row in Python; this sorts once (NaN sorts last) and
    interpolates between the order statistics of each row's non-NaN count. NaN where a row is
    all NaN. The result has ``q``'s shape prepended, as NumPy's.
    """
    a = np.moveaxis(np.asarray(a, float), axis, -1)
    qs = np.atleast_1d(np.asarray(q, float))
    out = np.full((len(qs), *a.shape[:-1]), np.nan)
    if a.shape[-1] == 0:
        return out if np.ndim(q) else out[0]
    s = np.sort(a, axis=-1)
    n = (~np.isnan(a)).sum(axis=-1)
    for i, qq in enumerate(qs):
        pos = qq * np.maximum(n - 1, 0)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
        frac = pos - lo
        v_lo = np.take_along_axis(s, lo[..., None], axis=-1)[..., 0]
        v_hi = np.take_along_axis(s, hi[..., None], axis=-1)[..., 0]
        out[i] = np.where(n > 0, v_lo + frac * (v_hi - v_lo), np.nan)
    return out if np.ndim(q) else out[0]
