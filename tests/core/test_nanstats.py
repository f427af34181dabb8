"""The vectorized NaN-ignoring median and quantiles agree with NumPy's."""

import warnings

import numpy as np
import pytest

from anomaly_assets.core.nanstats import nanmedian, nanquantile


def _sample(frac, seed=3):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(40, 57, 3))
    a[rng.random(a.shape) < frac] = np.nan
    a[0, :, 0] = np.nan  # an all-NaN row
    a[1, :-1, 1] = np.nan  # a single value
    return a


@pytest.mark.parametrize("frac", [0.0, 0.01, 0.4])
def test_median_matches_numpy(frac):
    a = _sample(frac)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = np.nanmedian(a, axis=1)
    np.testing.assert_allclose(nanmedian(a), want, rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("q", [0.05, 0.9, [0.05, 0.5, 0.95]])
@pytest.mark.parametrize("frac", [0.0, 0.4])
def test_quantile_matches_numpy(q, frac):
    a = _sample(frac)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = np.nanquantile(a, q, axis=1)
    got = nanquantile(a, q, axis=1)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15, equal_nan=True)


def test_empty_axis_gives_nan():
    assert np.isnan(nanmedian(np.zeros((2, 0, 3)))).all()
    assert nanquantile(np.zeros((2, 0)), [0.1, 0.9]).shape == (2, 2)
