"""How tests compare float results: to rounding, so that they hold on any machine.

Two correct runs of the same float64 computation differ wherever the order of a sum differs:
another CPU or BLAS kernel (OpenBLAS picks its kernels by CPU and by matrix size), another SIMD
width in numpy, DuckDB's parallel aggregation, another split of the fleet into chunks. A sum of
``n`` terms is then off by at most about ``n * eps * sum(|term|)`` (``eps`` = 2.2e-16): the error
is bounded by the size of the terms, not of the result. A residual (value - expected) or the
z-score of a near-flat series is a small result of large terms, so its *relative* error can be
large: one residual_z of SMD differed by 4.2e-9 relative on another machine and failed
``rtol=1e-9`` (issue 16), while it was off by 5e-13 of the values it came from.

So a float column is compared against its own scale::

    |got - want| <= ROUNDING * max(|want|) over the column      (NaN equals NaN)

with ``ROUNDING = 1e-9``. How it was chosen: the sums here run over up to ~1e4 terms of at most
the column's magnitude, so rounding moves a value by about 1e4 * eps = 2e-12 of the column's
scale. Measured (``benchmarks/float_tolerance.py``: the core on an SMD slice and the industrial
demo under seven BLAS and SIMD variants, ``OPENBLAS_CORETYPE`` = Sandybridge, Nehalem, Prescott,
SkylakeX, Zen, one BLAS thread, numpy without AVX-512, against this machine's default run; table
in benchmarks/RESULTS.md), the worst was 1.9e-13 of the column's scale (an anomaly_score); an
earlier run of the whole chain against references recorded on another machine saw 2.3e-12 of the
scale while, relative to the value, a residual_z reached 4.2e-9. 1e-9 leaves a margin of ~400x
over the worst seen, and stays far below what any change of the detection moves (a changed
parameter moves scores and z-scores by 1e-4 and more).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ROUNDING = 1e-9


def assert_close(got, want, err_msg: str = "", rounding: float = ROUNDING) -> None:
    """``got`` equals ``want`` (arrays) to ``rounding`` of ``max(|want|)``; NaN equals NaN.

    Parameters
    ----------
    got, want : array-like of float
        The same shape.
    err_msg : str
        Said on failure (e.g. the column).
    rounding : float
        The allowed difference as a share of the largest finite ``|want|``.
    """
    g, w = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    finite = np.isfinite(w)
    scale = float(np.abs(w[finite]).max()) if finite.any() else 0.0
    np.testing.assert_allclose(g, w, rtol=0, atol=rounding * scale, equal_nan=True,
                               err_msg=f"{err_msg} (allowed: {rounding:g} x the column's scale {scale:g})")


def assert_frames_close(got: pd.DataFrame, want: pd.DataFrame, name: str = "", rounding: float = ROUNDING) -> None:
    """Same columns and rows; float columns to rounding (:func:`assert_close`), the others exactly."""
    assert list(got.columns) == list(want.columns), name
    assert len(got) == len(want), f"{name}: {len(got)} rows, expected {len(want)}"
    for c in want.columns:
        if pd.api.types.is_float_dtype(want[c]):
            assert_close(got[c].to_numpy(float), want[c].to_numpy(float), f"{name}.{c}", rounding)
        else:
            pd.testing.assert_series_equal(got[c], want[c], check_dtype=False, check_categorical=False,
                                           obj=f"{name}.{c}")
