"""The band plot draws what it is given: the band where there is one, the flagged points in their
severity's colour, one panel per metric. Checked on the pixels of the PNG it returns."""

import io

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from anomaly_assets.plots import SEVERITY_COLORS, _BAND, band_plot, fleet_plot

TS = pd.date_range("2026-09-01", periods=24 * 7, freq="h", tz="UTC")


def _series(metrics=("vibration_mm_s", "bearing_temp_c"), band=True):
    rows = []
    for i, m in enumerate(metrics):
        base = 2.0 * (i + 1)
        expected = base + 0.2 * np.sin(np.arange(len(TS)) * 2 * np.pi / 24)
        value = expected + np.random.default_rng(i).normal(0, 0.02, len(TS))
        value[150:154] += 1.0  # a spike
        lower, upper = (expected - 0.15, expected + 0.15) if band else (np.full(len(TS), np.nan),) * 2
        rows.append(pd.DataFrame({"metric": m, "ts": TS, "value": value, "expected": expected,
                                  "lower": lower, "upper": upper}))
    return pd.concat(rows, ignore_index=True)


def _pixels(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3]


def _has_colour(img: np.ndarray, hex_colour: str, tol: float = 0.03) -> int:
    rgb = np.array([int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(img - rgb).max(axis=-1) < tol).sum())


def _band_pixels(img: np.ndarray) -> int:
    # the band is _BAND at alpha 0.6 over white
    rgb = np.array([int(_BAND[i:i + 2], 16) / 255 for i in (1, 3, 5)]) * 0.6 + 0.4
    return int((np.abs(img - rgb).max(axis=-1) < 0.03).sum())


def test_band_and_flags_are_drawn_one_panel_per_metric():
    flags = pd.DataFrame({"ts": TS[150:154], "severity": ["warning", "critical", "critical", "warning"]})
    two = _pixels(band_plot(_series(), flags, title="pump-0007"))
    one = _pixels(band_plot(_series(metrics=("vibration_mm_s",)), flags))
    assert two.shape[0] > 1.6 * one.shape[0] and two.shape[1] == one.shape[1]  # stacked panels
    assert _band_pixels(two) > 5_000  # the band is shaded
    assert _has_colour(two, SEVERITY_COLORS["critical"]) > 50 and _has_colour(two, SEVERITY_COLORS["warning"]) > 50


def test_no_band_where_the_decomposition_gives_none_and_no_marks_without_flags():
    img = _pixels(band_plot(_series(band=False)))
    assert _band_pixels(img) < 100  # (the legend has none either: there is nothing to name)
    assert _has_colour(img, SEVERITY_COLORS["critical"]) == 0


def test_a_partial_band_is_drawn_only_where_it_exists():
    s = _series(metrics=("vibration_mm_s",))
    full = _band_pixels(_pixels(band_plot(s)))
    s.loc[s["ts"] < TS[84], ["lower", "upper"]] = np.nan  # cold start: the first half has no band
    half = _band_pixels(_pixels(band_plot(s)))
    assert 0.3 * full < half < 0.7 * full


def test_metrics_order_and_missing_input_are_explicit():
    with pytest.raises(ValueError, match="no metric to draw"):
        band_plot(_series().iloc[:0])
    # flags at times the series does not have are not drawn (no point to put them on)
    img = _pixels(band_plot(_series(), pd.DataFrame({"ts": [pd.Timestamp("2030-01-01", tz="UTC")],
                                                     "severity": ["critical"]})))
    assert _has_colour(img, SEVERITY_COLORS["critical"]) == 0


def test_fleet_plot_draws_the_days():
    fleet = pd.DataFrame({"day": pd.date_range("2026-09-01", periods=10).date, "anomaly_rate": np.linspace(0, 0.1, 10),
                          "entities_with_anomalies": np.arange(10), "critical_points": np.arange(10)})
    assert _pixels(fleet_plot(fleet)).shape[0] > 100
    with pytest.raises(ValueError, match="no day"):
        fleet_plot(fleet.iloc[:0])


def test_a_band_reaching_far_past_the_data_does_not_flatten_the_line():
    from anomaly_assets.plots import _VALUE

    def line_height(series):
        img = _pixels(band_plot(series, metrics=["vibration_mm_s"]))
        rgb = np.array([int(_VALUE[i:i + 2], 16) / 255 for i in (1, 3, 5)])
        line = np.abs(img - rgb).max(axis=-1) < 0.03
        line[:, : img.shape[1] // 2] = False  # the legend's sample line is at the upper left
        rows = np.flatnonzero(line.any(axis=1))
        return rows.max() - rows.min()

    s = _series(metrics=("vibration_mm_s",))
    wide = s.assign(upper=s["expected"] + 1e6)  # a heavy-tailed metric's band
    assert line_height(wide) > 0.5 * line_height(s) > 20  # autoscaled to the band: one pixel row


def test_a_band_with_one_unbounded_side_is_drawn_to_the_axis_edge():
    s = _series(metrics=("vibration_mm_s",))
    one_sided = s.assign(upper=np.nan)  # past any plausible value: NULL in the decomposition
    assert _band_pixels(_pixels(band_plot(one_sided))) > 5_000
