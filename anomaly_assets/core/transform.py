"""A per-series variance-stabilizing transform, chosen on the reference."""

from __future__ import annotations

import numpy as np

from anomaly_assets.core import baseline as bl


class Transform:
    """Per-series variance-stabilizing transform: ``log1p(x / c)`` for non-negative, right-skewed
    series (amounts, counts, latencies), whose spread grows with their level; identity otherwise.

    ``c`` is the median of the series' positive reference values, so the transform is close to
    linear below it and logarithmic above it. A series qualifies when its upper tail is at least
    ``_SKEW`` times as long as its lower one (``q95 - q50 >= _SKEW (q50 - q05)``) and it reaches
    down towards zero (``q05 <= _NEAR_ZERO q50``).
    """

    _SKEW = 3.0
    _NEAR_ZERO = 0.2

    def __init__(self, on: np.ndarray, c: np.ndarray):
        self.on, self.c = on, c
        self.any = bool(on.any())

    @classmethod
    def choose(cls, x_ref: np.ndarray, mode: str) -> "Transform":
        E, _, m = x_ref.shape
        if mode == "none":
            return cls(np.zeros((E, m), bool), np.ones((E, m)))
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            q05, q50, q95 = bl.nanquantile(x_ref, [0.05, 0.5, 0.95], axis=1)
            lowest = np.nanmin(np.where(np.isnan(x_ref), np.inf, x_ref), axis=1)
            c = bl._nanmedian(np.where(x_ref > 0, x_ref, np.nan))
        # right-skewed and reaching down towards zero: a temperature swinging between 55 and 75
        # with its daily load is skewed too, but its spread does not grow with its level
        on = ((lowest >= 0) & (q95 > 0) & ((q95 - q50) >= cls._SKEW * (q50 - q05)) & (q05 <= cls._NEAR_ZERO * q50)
              & np.isfinite(c) & (c > 0))
        return cls(on, np.where(on, np.nan_to_num(c, nan=1.0), 1.0))

    def fwd(self, x: np.ndarray) -> np.ndarray:
        if not self.any:
            return x
        on, c = self.on[:, None, :], self.c[:, None, :]
        return np.where(on, np.log1p(np.maximum(x, 0.0) / c), x)

    def inv(self, y: np.ndarray) -> np.ndarray:
        if not self.any:
            return y
        on, c = self.on[:, None, :], self.c[:, None, :]
        with np.errstate(over="ignore"):
            return np.where(on, c * np.expm1(np.minimum(y, 700.0)), y)
