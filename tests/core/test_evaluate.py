"""Hand-worked examples for anomaly_assets.core.evaluate."""

from __future__ import annotations

import gc
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from anomaly_assets.core.evaluate import (
    BestF1,
    average_precision,
    best_f1,
    event_metrics,
    events,
    hit_rate,
    label_mask,
    pointwise,
)


@pytest.fixture(autouse=True)
def _no_warnings():
    """Every metric must be silent (no sklearn UndefinedMetricWarning, no 0/0)."""
    # what earlier tests of this process left for the garbage collector (a library's temporary
    # directory) is collected first, and its ResourceWarning is not the metrics'
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", ResourceWarning)
        yield


# --------------------------------------------------------------------------- #
# label_mask
# --------------------------------------------------------------------------- #
TS = np.arange(
    np.datetime64("2026-09-07T00:00"), np.datetime64("2026-09-07T06:00"), np.timedelta64(1, "h")
).astype("datetime64[ns]")  # 00:00 .. 05:00, 6 points


def test_label_mask_inclusive_bounds():
    m = label_mask(TS, [("2026-09-07T01:00:00Z", "2026-09-07T03:00:00Z")])
    assert m.tolist() == [False, True, True, True, False, False]


def test_label_mask_several_windows_and_types():
    m = label_mask(
        TS,
        [
            (pd.Timestamp("2026-09-07T00:00Z"), pd.Timestamp("2026-09-07T00:00Z")),
            (np.datetime64("2026-09-07T04:30"), "2026-09-07T09:00:00Z"),  # partial
        ],
    )
    assert m.tolist() == [True, False, False, False, False, True]


def test_label_mask_tz_aware_input_is_converted_to_utc():
    berlin = pd.DatetimeIndex(TS).tz_localize("UTC").tz_convert("Europe/Berlin")
    m = label_mask(berlin, [("2026-09-07T02:00:00+02:00", "2026-09-07T02:00:00Z")])
    # 02:00+02:00 == 00:00Z -> 00:00Z..02:00Z
    assert m.tolist() == [True, True, True, False, False, False]


def test_label_mask_no_windows_and_empty_ts():
    assert label_mask(TS, []).tolist() == [False] * 6
    assert label_mask(np.array([], dtype="datetime64[ns]"), [("2026-01-01", "2026-01-02")]).size == 0


def test_label_mask_rejects_reversed_window():
    with pytest.raises(ValueError):
        label_mask(TS, [("2026-09-07T03:00Z", "2026-09-07T01:00Z")])


# --------------------------------------------------------------------------- #
# pointwise
# --------------------------------------------------------------------------- #
def test_pointwise_hand_example():
    y = [0, 1, 1, 1, 0, 0]
    p = [1, 1, 0, 1, 0, 0]
    r = pointwise(y, p)  # tp=2 fp=1 fn=1
    assert (r.tp, r.fp, r.fn) == (2, 1, 1)
    assert r.precision == pytest.approx(2 / 3)
    assert r.recall == pytest.approx(2 / 3)
    assert r.f1 == pytest.approx(2 / 3)


def test_pointwise_undefined_is_zero():
    r = pointwise([0, 0, 0], [0, 0, 0])
    assert (r.precision, r.recall, r.f1) == (0.0, 0.0, 0.0)
    r = pointwise([1, 1, 0], [0, 0, 0])  # no predictions
    assert (r.precision, r.recall, r.f1) == (0.0, 0.0, 0.0)
    r = pointwise([0, 0, 0], [1, 0, 0])  # no positives
    assert (r.precision, r.recall, r.f1) == (0.0, 0.0, 0.0)
    r = pointwise([], [])
    assert r.f1 == 0.0


def test_pointwise_all_true():
    r = pointwise(np.ones(5, bool), np.ones(5, bool))
    assert (r.precision, r.recall, r.f1) == (1.0, 1.0, 1.0)


def test_pointwise_validates():
    with pytest.raises(ValueError):
        pointwise([0, 1], [0, 1, 1])
    with pytest.raises(ValueError):
        pointwise([0, 2], [0, 1])


# --------------------------------------------------------------------------- #
# best_f1 / average_precision
# --------------------------------------------------------------------------- #
def test_best_f1_hand_example():
    # thresholds 0.1: P=2/4 R=1 F=.667 | 0.35: P=2/3 R=1 F=.8
    #            0.4: P=1/2 R=1/2 F=.5 | 0.8: P=1 R=1/2 F=.667
    r = best_f1([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert isinstance(r, BestF1)
    assert r.f1 == pytest.approx(0.8)
    assert r.threshold == 0.35
    assert r.precision == pytest.approx(2 / 3)
    assert r.recall == 1.0


def test_best_f1_perfect_separation_picks_lowest_positive_score():
    r = best_f1([0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.9])
    assert (r.f1, r.threshold, r.precision, r.recall) == (1.0, 0.7, 1.0, 1.0)


def test_best_f1_tie_breaks_to_highest_threshold():
    # threshold 0.2 -> P=1/2 R=1 F=2/3 ; threshold 0.9 -> P=1 R=1/2 F=2/3
    r = best_f1([0, 1, 0, 1], [0.2, 0.2, 0.5, 0.9])
    # 0.5: P=1/2 R=1/2 F=1/2.  Tie 2/3 at 0.2 and 0.9 -> 0.9
    assert r.f1 == pytest.approx(2 / 3)
    assert r.threshold == 0.9
    assert (r.precision, r.recall) == (1.0, 0.5)


def test_best_f1_all_positive_and_constant_scores():
    r = best_f1([1, 1, 1], [0.5, 0.5, 0.5])
    assert (r.f1, r.threshold, r.precision, r.recall) == (1.0, 0.5, 1.0, 1.0)
    r = best_f1([0, 1, 0, 0], [3.0, 3.0, 3.0, 3.0])  # one threshold, all flagged
    assert r.f1 == pytest.approx(2 * 0.25 / 1.25)
    assert r.threshold == 3.0


def test_best_f1_no_positives_is_nan():
    r = best_f1([0, 0, 0], [0.1, 0.5, 0.2])
    assert all(math.isnan(v) for v in (r.f1, r.threshold, r.precision, r.recall))
    assert math.isnan(best_f1([], []).f1)


def test_best_f1_rejects_nan_scores():
    with pytest.raises(ValueError):
        best_f1([0, 1], [0.1, np.nan])


def test_average_precision_hand_example():
    # ranked: 0.8(+) 0.4(-) 0.35(+) 0.1(-) -> AP = .5*1 + .5*(2/3)
    assert average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(5 / 6)
    assert average_precision([0, 1, 1], [0.0, 1.0, 2.0]) == 1.0
    assert math.isnan(average_precision([0, 0], [0.3, 0.1]))
    assert math.isnan(average_precision([], []))


# --------------------------------------------------------------------------- #
# events / event_metrics
# --------------------------------------------------------------------------- #
def test_events_runs_inclusive():
    assert events([0, 1, 1, 0, 1]) == [(1, 2), (4, 4)]
    assert events([1, 1, 0, 0, 1, 1, 1]) == [(0, 1), (4, 6)]
    assert events(np.ones(4, bool)) == [(0, 3)]
    assert events(np.zeros(4, bool)) == []
    assert events([]) == []
    assert all(isinstance(i, int) for ev in events([1, 0, 1]) for i in ev)


def test_event_metrics_hand_example():
    y = [0, 1, 1, 0, 0, 1, 1, 0, 0, 1]  # true events (1,2) (5,6) (9,9)
    p = [0, 0, 1, 0, 1, 1, 0, 0, 0, 0]  # pred events (2,2) (4,5)
    r = event_metrics(y, p)
    # true: (1,2) hit, (5,6) hit, (9,9) missed -> 2/3
    # pred: (2,2) overlaps, (4,5) overlaps at 5 -> 2/2
    assert r.event_recall == pytest.approx(2 / 3)
    assert r.event_precision == 1.0
    assert r.event_f1 == pytest.approx(0.8)
    assert (r.n_true_events, r.n_pred_events) == (3, 2)
    assert (r.true_events_hit, r.pred_events_correct) == (2, 2)


def test_event_metrics_false_alarm_event():
    y = [1, 1, 0, 0, 0, 0]
    p = [0, 1, 0, 1, 1, 0]
    r = event_metrics(y, p)
    assert r.event_recall == 1.0
    assert r.event_precision == 0.5


def test_event_metrics_empty_events():
    r = event_metrics([0, 0, 0], [0, 0, 0])
    assert (r.event_recall, r.event_precision, r.event_f1) == (0.0, 0.0, 0.0)
    assert (r.n_true_events, r.n_pred_events) == (0, 0)
    r = event_metrics([0, 1, 0], [0, 0, 0])  # nothing predicted
    assert (r.event_recall, r.event_precision) == (0.0, 0.0)
    r = event_metrics([0, 0, 0], [1, 0, 1])  # only false alarms
    assert (r.event_recall, r.event_precision, r.n_pred_events) == (0.0, 0.0, 2)


def test_event_metrics_all_true():
    r = event_metrics(np.ones(5, bool), np.ones(5, bool))
    assert (r.event_recall, r.event_precision, r.event_f1) == (1.0, 1.0, 1.0)
    assert (r.n_true_events, r.n_pred_events) == (1, 1)
    r = event_metrics(np.ones(5, bool), [0, 0, 0, 0, 1])
    assert (r.event_recall, r.event_precision) == (1.0, 1.0)


# --------------------------------------------------------------------------- #
# hit_rate
# --------------------------------------------------------------------------- #
def test_hit_rate_hand_example():
    ranked = [
        ["a", "b", "c", "d"],  # truth {a,c}, g=2: top2 {a,b} -> 1/2 ; top3 -> 2/2
        ["c", "a", "b", "d"],  # truth {b},   g=1: top1 {c}   -> 0   ; p=1.5 top1 -> 0
        ["d", "b", "a", "c"],  # truth {d},   g=1: top1 {d}   -> 1   ; p=1.5 top1 -> 1
    ]
    truth = [{"a", "c"}, {"b"}, {"d"}]
    assert hit_rate(ranked, truth, p=1.0) == pytest.approx((0.5 + 0 + 1) / 3)
    assert hit_rate(ranked, truth, p=1.5) == pytest.approx((1.0 + 0 + 1) / 3)


def test_hit_rate_p15_with_g1_is_top1():
    # floor(1.5 * 1) = 1: the second-ranked metric does not count
    assert hit_rate([["x", "y"]], [["y"]], p=1.5) == 0.0
    assert hit_rate([["y", "x"]], [["y"]], p=1.5) == 1.0
    # g=2, p=1.5 -> floor(3) = 3
    assert hit_rate([["x", "a", "b"]], [["a", "b"]], p=1.5) == 1.0


def test_hit_rate_edge_cases():
    assert math.isnan(hit_rate([], []))
    assert math.isnan(hit_rate([["a"]], [set()]))  # points without truth are skipped
    assert hit_rate([["a"], ["a", "b"]], [set(), {"b"}], p=2.0) == 1.0
    # ranking shorter than k uses what is there
    assert hit_rate([["a"]], [{"a", "b"}], p=1.0) == 0.5
    # float guard: floor(0.29 * 100) must be 29, not 28
    names = [f"m{i:03d}" for i in range(100)]
    assert hit_rate([names], [set(names)], p=0.29) == pytest.approx(0.29)
    with pytest.raises(ValueError):
        hit_rate([["a"]], [{"a"}, {"b"}])
    with pytest.raises(ValueError):
        hit_rate([["a"]], [{"a"}], p=0)
