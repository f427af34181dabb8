"""Metric kinds, money formatting and the business_gap rule, on small frames."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anomaly_assets.alert_config import AlertRules, load_alert_rules
from anomaly_assets.config import ConfigFileError, load_metric_families
from anomaly_assets.core import rules as R
from anomaly_assets.core.semantics import fmt_pair, fmt_value, infer_kind

DAYS = pd.date_range("2026-03-01", periods=20, freq="D", tz="UTC")


def test_kinds_are_declared_inferred_from_names_then_from_values():
    assert infer_kind("card_payments_usd") == "currency" and infer_kind("on_hand") == "stock"
    assert infer_kind("delinquency_rate") == "ratio" and infer_kind("move_ins") == "count"
    assert infer_kind("bearing_temp_c") == "sensor"
    assert infer_kind("visitors", {"visitors": "count"}) == "count"
    assert infer_kind("walk_ins", values=np.array([0, 1, 0, 2, 0, 0, 3, 1, 0, 0, 1])) == "count"
    assert infer_kind("pressure", values=np.array([1.5, 1.6, 1.55] * 5)) == "sensor"


def test_money_counts_and_ratios_print_as_people_write_them():
    assert fmt_value(478.2, "currency") == "$478" and fmt_value(1110.4, "currency") == "$1,110"
    assert fmt_value(-5.5, "currency") == "-$5.50" and fmt_value(-12.5, "currency") == "-$12" and fmt_value(2.0, "count") == "2"
    assert fmt_value(0.0843, "ratio") == "8.4%" and fmt_value(None, "currency") == "n/a"
    for x in (1234.5, 0.000123, 98765.4, 1e-9):
        assert "e" not in fmt_value(x, "sensor")  # never scientific notation
    assert fmt_value(1234.5, "sensor", "mm/s") == "1,234 mm/s"
    assert fmt_value(0.00041, "currency") == "$0.00041" and fmt_value(0.0, "currency") == "$0.00"


def test_actual_and_expected_print_with_the_digits_that_tell_them_apart():
    assert fmt_pair(47, 50) == ("47", "50") and fmt_pair(478.2, 1110.4, "currency") == ("$478", "$1,110")
    assert fmt_pair(100.4, 100.1) == ("100.4", "100.1") and fmt_pair(5.01, 5.0, "sensor", "V") == ("5.01 V", "5")
    assert fmt_pair(1110.4, 1110.1, "currency") == ("$1,110.4", "$1,110.1")
    assert fmt_pair(0.0843, 0.0841, "ratio") == ("8.43%", "8.41%") and fmt_pair(12.0, 12.0, "count") == ("12", "12")
    assert fmt_pair(float("inf"), 9.95) == ("n/a", "9.95")
    assert fmt_pair(999.96, 1000.4) == ("999.96", "1,000.4") and fmt_pair(1.6, 1.4, "ratio") == ("1.6", "1.4")


def test_an_unknown_kind_names_the_file_field_and_value(tmp_path: Path):
    bad = tmp_path / "metric_families.yaml"
    bad.write_text("kinds: {revenue: money}\n")
    with pytest.raises(ConfigFileError) as e:
        load_metric_families(bad)
    assert str(bad) in str(e.value) and "kinds" in str(e.value) and "'money'" in str(e.value)


def test_a_business_rule_without_its_threshold_fails_naming_rule_and_field(tmp_path: Path):
    f = tmp_path / "rules.yaml"
    f.write_text("rules:\n  - {name: drop, type: business_gap, metrics: [units_sold], direction: below}\n")
    with pytest.raises(ConfigFileError) as e:
        load_alert_rules(f)
    assert "rule 'drop' (rules[0])" in str(e.value) and "max_share" in str(e.value)


def _dec(rows: dict[str, tuple[list[float], list[float]]], entity: str = "S01-SKU1") -> pd.DataFrame:
    parts = [pd.DataFrame({"entity_id": entity, "metric": m, "ts": DAYS[:len(v)], "value": v, "expected": x})
             for m, (v, x) in rows.items()]
    d = pd.concat(parts, ignore_index=True)
    return d.assign(residual=d["value"] - d["expected"], residual_z=(d["value"] - d["expected"]) / 2.0)


def _inputs(dec: pd.DataFrame, attributes=None, events=None) -> R.RuleInputs:
    scores = dec[["entity_id", "ts"]].drop_duplicates().assign(anomaly_score=0.0, is_anomaly=False, severity="normal")
    expl = pd.DataFrame(columns=["entity_id", "ts", "metric", "rank", "contribution", "family", "expected", "actual"])
    return R.RuleInputs(scores=scores, explanations=expl, decomposition=dec, attributes=attributes, events=events)


def _cfg(**rule) -> AlertRules:
    base = {"name": "gap", "type": "business_gap", "resolve_after": "36h", "fault_kind": "ghost_stock"}
    return AlertRules.model_validate({"rules": [{**base, **rule}], "routing": {"routes": [
        {"fault_kind": "ghost_stock", "team": "store_operations"}]}})


def test_ghost_stock_needs_frozen_stock_and_material_expected_sales():
    sold = [5.0] * 10 + [0.0] * 5
    on_hand = list(100 - np.cumsum(sold))
    dec = _dec({"units_sold": (sold, [5.0] * 15), "on_hand": (on_hand, on_hand)})
    attrs = pd.DataFrame({"entity_id": ["S01-SKU1"], "price_usd": ["4.0"]})
    cfg = _cfg(kinds=["count"], direction="below", window=3, max_share=0.1, min_expected=6, stock="frozen",
               price_column="price_usd")
    hits = R.find_hits(cfg, _inputs(dec, attrs), DAYS[0], DAYS[15])
    # days 10..14 sell nothing; the first full window with the stock unchanged ends on day 12
    assert list(hits["ts"]) == list(DAYS[12:15])
    assert hits["value_at_risk"].tolist() == pytest.approx([15 * 4.0] * 3)
    rows = R.alert_rows(R.fold_alerts(hits, cfg), cfg, _inputs(dec, attrs), DAYS[14])
    assert len(rows) == 1 and rows["team"].iloc[0] == "store_operations"
    assert rows["value_at_risk"].iloc[0] == pytest.approx(15 * 4.0 + 2 * 15 * 4.0 / 3)
    assert "the system shows 50 units on hand" in rows["why"].iloc[0] and "$100 at risk (25 units x $4.00)" in rows["why"].iloc[0]
    # a slow mover (1 a day expected: 3 over the window) selling nothing is no ghost
    slow = _dec({"units_sold": ([1.0] * 10 + [0.0] * 5, [1.0] * 15), "on_hand": (on_hand, on_hand)})
    assert R.find_hits(cfg, _inputs(slow, attrs), DAYS[0], DAYS[15]).empty
    # the stock moved (a delivery): the shelf is real
    moved = list(on_hand)
    moved[12] += 24
    dec2 = _dec({"units_sold": (sold, [5.0] * 15), "on_hand": (moved, moved)})
    assert DAYS[12] not in set(R.find_hits(cfg, _inputs(dec2, attrs), DAYS[0], DAYS[15])["ts"])


def test_a_count_that_is_often_zero_is_never_a_stuck_sensor():
    cfg = AlertRules.model_validate({"rules": [{"name": "stuck", "type": "sustained_deviation", "condition": "stuck",
                                                "periods": 3, "peer_z": 0}]})
    counts = [0, 1, 0, 0, 0, 0, 2, 1, 0, 3, 0, 0, 0, 0, 0]
    temp = [20.1, 20.4, 20.2, 20.6, 20.3, 20.7, 20.2, 20.5, 20.5, 20.5, 20.5, 20.5, 20.5, 20.5, 20.5]
    dec = _dec({"move_ins": (counts, [0.5] * 15), "sensor_temp": (temp, [20.4] * 15)})
    hits = R.find_hits(cfg, _inputs(dec), DAYS[0], DAYS[15])
    assert set(hits["metric"]) == {"sensor_temp"}


def test_a_card_gap_needs_the_other_channels_to_hold_and_skips_known_events():
    card = [1000.0] * 10
    card[5] = 8.0
    card[8] = 5.0
    ach = [400.0] * 10
    ach[8] = 3.0  # day 8: everything down (an office closed, a feed late), not the card processor
    dec = _dec({"card_payments_usd": (card, [1000.0] * 10), "ach_payments_usd": (ach, [400.0] * 10)}, "fac-001")
    cfg = _cfg(metrics=["card_payments_usd"], direction="below", max_share=0.05, min_share=0.0,
               others=["ach_payments_usd"], fault_kind="card_outage")
    hits = R.find_hits(cfg, _inputs(dec), DAYS[0], DAYS[10])
    assert list(hits["ts"]) == [DAYS[5]] and hits["value_at_risk"].iloc[0] == pytest.approx(992.0)
    events = pd.DataFrame({"entity_id": ["fac-001"], "day": [DAYS[4]], "kind": ["bank_holiday"], "name": ["x"]})
    assert R.find_hits(cfg, _inputs(dec, events=events), DAYS[0], DAYS[10]).empty  # the day after a holiday
    rows = R.alert_rows(R.fold_alerts(hits, cfg), cfg, _inputs(dec), DAYS[9])
    assert "card_payments_usd $8.00 vs $1,000 expected on 2026-03-06 (-99%); ach_payments_usd held; $992 at risk. Likely card outage" == rows["why"].iloc[0]


def test_a_baseline_rule_fires_on_a_fresh_rise_not_on_a_level_the_forecast_lags():
    # the rate runs 25% above a lagging forecast for days, then jumps by 40% on day 12 and stays
    rate = [0.05] * 12 + [0.07] * 8
    dec = _dec({"delinquency_rate": (rate, [0.04] * 20)}, "fac-001")
    plain = _cfg(metrics=["delinquency_rate"], direction="above", min_ratio=1.2, floor=0.005,
                 fault_kind="delinquency_spike")
    assert len(R.find_hits(plain, _inputs(dec), DAYS[0], DAYS[-1] + pd.Timedelta(days=1))) == 20  # every day: the lag, not a spike
    cfg = _cfg(metrics=["delinquency_rate"], direction="above", min_ratio=1.2, floor=0.005, baseline=7,
               fault_kind="delinquency_spike")
    hits = R.find_hits(cfg, _inputs(dec), DAYS[0], DAYS[-1] + pd.Timedelta(days=1))
    assert list(hits["ts"]) == list(DAYS[12:16])  # from day 16 most of the week before is at the new level
    # the expected total shown is the forecast rescaled by the week before: 0.04 x 1.25
    assert hits["expected_total"].iloc[0] == pytest.approx(0.05)
    assert hits["measure"].iloc[0] == pytest.approx(1.4)


def test_a_rule_can_stay_quiet_after_events_for_less_than_the_default():
    card = [1000.0] * 10
    card[6] = 10.0  # an outage two days after a holiday on day 4
    dec = _dec({"card_payments_usd": (card, [1000.0] * 10), "ach_payments_usd": ([400.0] * 10, [400.0] * 10)}, "fac-001")
    events = pd.DataFrame({"entity_id": ["fac-001"], "day": [DAYS[4]], "kind": ["bank_holiday"], "name": ["x"]})
    rule = dict(metrics=["card_payments_usd"], direction="below", max_share=0.05, others=["ach_payments_usd"],
                fault_kind="card_outage")
    assert R.find_hits(_cfg(**rule), _inputs(dec, events=events), DAYS[0], DAYS[10]).empty  # default: 2 days
    hits = R.find_hits(_cfg(**rule, after_events="1d"), _inputs(dec, events=events), DAYS[0], DAYS[10])
    assert list(hits["ts"]) == [DAYS[6]]
    card[6], card[5] = 1000.0, 10.0  # the day right after the holiday stays quiet
    dec = _dec({"card_payments_usd": (card, [1000.0] * 10), "ach_payments_usd": ([400.0] * 10, [400.0] * 10)}, "fac-001")
    assert R.find_hits(_cfg(**rule, after_events="1d"), _inputs(dec, events=events), DAYS[0], DAYS[10]).empty


def test_other_channels_need_not_hold_on_a_weekday_they_never_settle():
    days = pd.date_range("2026-03-02", periods=42, freq="D", tz="UTC")  # six weeks from a Monday
    sunday = days.dayofweek == 6
    ach = np.where(sunday, 0.0, 400.0)  # no ACH on Sundays, though the forecast expects some
    card = np.full(42, 1000.0)
    card[[34, 37]] = 10.0  # an outage on the fifth Sunday, and card down on a Thursday with ACH
    ach[37] = 0.0          # down too: everything down is not the card processor
    dec = pd.concat([pd.DataFrame({"entity_id": "fac-001", "metric": m, "ts": days, "value": v, "expected": x})
                     for m, v, x in (("card_payments_usd", card, np.full(42, 1000.0)),
                                     ("ach_payments_usd", ach, np.full(42, 300.0)))], ignore_index=True)
    dec = dec.assign(residual=dec["value"] - dec["expected"], residual_z=(dec["value"] - dec["expected"]) / 2.0)
    cfg = _cfg(metrics=["card_payments_usd"], direction="below", max_share=0.05, others=["ach_payments_usd"],
               hold_share=0.25, fault_kind="card_outage")
    hits = R.find_hits(cfg, _inputs(dec), days[0], days[-1] + pd.Timedelta(days=1))
    assert list(hits["ts"]) == [days[34]] and days[34].dayofweek == 6


@pytest.mark.parametrize("field, value, allowed", [("baseline", 2, "at least 3"), ("after_events", "soon", ""),
                                                  ("max_tail_p", 1.5, "less than 1"), ("min_cover", -1, "")])
def test_new_business_options_fail_naming_file_rule_field_and_value(tmp_path: Path, field, value, allowed):
    f = tmp_path / "rules.yaml"
    f.write_text("rules:\n  - {name: delq, type: business_gap, metrics: [delinquency_rate], direction: above,"
                 f" min_ratio: 1.3, {field}: {value}}}\n")
    with pytest.raises(ConfigFileError) as e:
        load_alert_rules(f)
    msg = str(e.value)
    assert str(f) in msg and "rule 'delq' (rules[0])" in msg and f"field '{field}'" in msg and repr(value) in msg
    assert allowed in msg


def test_a_dip_the_sku_makes_every_few_weeks_is_its_noise_unless_a_promotion_explained_it():
    days = pd.date_range("2026-01-01", periods=40, freq="D", tz="UTC")
    sold = np.full(40, 10.0)
    sold[[10, 11, 12]] = 1.0   # an earlier dip, off the calendar
    sold[[33, 34, 35]] = 1.0   # the dip the rule judges
    on_hand = 500.0 - np.cumsum(sold)
    dec = pd.concat([pd.DataFrame({"entity_id": "S01-SKU1", "metric": m, "ts": days, "value": v, "expected": x})
                     for m, v, x in (("units_sold", sold, np.full(40, 10.0)), ("on_hand", on_hand, on_hand))],
                    ignore_index=True)
    dec = dec.assign(residual=dec["value"] - dec["expected"], residual_z=(dec["value"] - dec["expected"]) / 2.0)
    rule = dict(kinds=["count"], direction="below", window=3, max_share=0.3, min_expected=15, stock="moving",
                fault_kind="sales_drop")
    end = days[-1] + pd.Timedelta(days=1)
    assert days[35] in set(R.find_hits(_cfg(**rule), _inputs(dec), days[0], end)["ts"])
    cfg = _cfg(**rule, recur_window=28, max_recur=0)
    hits = R.find_hits(cfg, _inputs(dec), days[0], end)
    assert days[12] in set(hits["ts"]) and days[35] not in set(hits["ts"])  # it dipped 3 weeks before
    # the earlier dip followed a promotion (and the rule stays quiet on it): it does not count
    events = pd.DataFrame({"entity_id": ["S01-SKU1"], "day": [days[9]], "kind": ["promotion"], "name": ["sale"]})
    hits = R.find_hits(cfg, _inputs(dec, events=events), days[0], end)
    assert days[12] not in set(hits["ts"]) and days[35] in set(hits["ts"])
    # the window, the reading before it, and the 28 readings of windows the recurrence judges
    assert R.readings_needed(cfg.rules[0]) == 3 + 1 + 28 + 2


def test_a_spike_must_be_far_out_against_the_series_own_noise():
    sold = [4.0] * 10 + [12.0, 12.0, 4.0]
    dec = _dec({"units_sold": (sold, [4.0] * 13)})
    rule = dict(kinds=["count"], direction="above", window=2, min_ratio=2.5, min_expected=6, floor=8,
                fault_kind="unplanned_spike")
    assert list(R.find_hits(_cfg(**rule), _inputs(dec), DAYS[0], DAYS[13])["ts"]) == [DAYS[11]]
    # residual_z = residual / 2 here: (4 + 4) / sqrt(2) = 5.7σ over the window clears 5, not 6
    assert list(R.find_hits(_cfg(**rule, min_window_z=5), _inputs(dec), DAYS[0], DAYS[13])["ts"]) == [DAYS[11]]
    noisy = dec.assign(residual_z=dec["residual"] / 8.0)  # a noisier SKU: the same units are 1.4σ
    assert R.find_hits(_cfg(**rule, min_window_z=2), _inputs(noisy), DAYS[0], DAYS[13]).empty


def test_max_recur_without_its_window_fails_naming_the_rule(tmp_path: Path):
    f = tmp_path / "rules.yaml"
    f.write_text("rules:\n  - {name: drop, type: business_gap, kinds: [count], max_share: 0.3, max_recur: 1}\n")
    with pytest.raises(ConfigFileError) as e:
        load_alert_rules(f)
    assert str(f) in str(e.value) and "rule 'drop' (rules[0])" in str(e.value) and "recur_window" in str(e.value)


def _count_series(values, expected, entity="S01-SKU1", stock=None):
    days = pd.date_range("2026-01-01", periods=len(values), freq="D", tz="UTC")
    stock = 1000.0 - np.cumsum(values) if stock is None else np.asarray(stock, float)
    dec = pd.concat([pd.DataFrame({"entity_id": entity, "metric": m, "ts": days, "value": v, "expected": x})
                     for m, v, x in (("units_sold", np.asarray(values, float), np.asarray(expected, float)),
                                     ("on_hand", stock, stock))], ignore_index=True)
    return days, dec.assign(residual=dec["value"] - dec["expected"], residual_z=(dec["value"] - dec["expected"]) / 2.0)


def _law_p(sold, expected, a, window, direction="below", n=56):
    """The tail probability the rule should give the last window, computed apart from it."""
    from scipy import stats

    v, x = np.asarray(sold[-window - n:-window], float), np.asarray(expected[-window - n:-window], float)
    r = v.sum() / x.sum()
    kinv = np.clip((((v - r * x) ** 2) - r * x).sum() / ((r * x) ** 2).sum(), 1e-3, 10.0)
    xw = np.asarray(expected[-window:], float)
    mean = r * xw.sum()
    shape = mean**2 / (kinv * (r * xw) @ (r * xw))  # independent days of different means
    q = shape / (shape + mean)
    return stats.nbinom.cdf(a, shape, q) if direction == "below" else stats.nbinom.sf(a - 1, shape, q)


def test_a_count_window_is_judged_by_the_series_own_law():
    from anomaly_assets.core.rules.business import _count_tail_p, _windows

    rng = np.random.default_rng(5)
    steady = rng.poisson(6.0, 70).astype(float)
    wild = rng.negative_binomial(1.0, 1.0 / 7.0, 70).astype(float)  # mean 6, variance 42
    rule = dict(kinds=["count"], direction="below", window=3, max_share=0.5, stock="moving", max_tail_p=0.003,
                law_readings=56, fault_kind="sales_drop")
    for sold, flagged in ((steady, True), (wild, False)):
        sold[-3:] = [2.0, 1.0, 2.0]  # 5 sold where 18 were expected (the detector's median-like 5 a day)
        days, dec = _count_series(sold, np.full(70, 5.0))
        hits = R.find_hits(_cfg(**rule), _inputs(dec), days[0], days[-1] + pd.Timedelta(days=1))
        assert (days[-1] in set(hits["ts"])) == flagged
    # the law, exactly: the 56 readings strictly before the window, the expected rescaled to their
    # mean, their excess variance a negative binomial's, the window's days each with its own mean
    sold = rng.negative_binomial(4.0, 4.0 / 10.0, 70).astype(float)  # mean 6, over-dispersed
    expected = np.tile([4.0, 5.0, 7.0, 5.0, 4.0, 6.0, 8.0], 10)  # a weekly cycle
    sold[-3:] = [1.0, 3.0, 2.0]
    days, dec = _count_series(sold, expected)
    cfg = _cfg(**rule)
    w = _windows(dec[dec.metric == "units_sold"].sort_values("ts").reset_index(drop=True), 3)
    p = _count_tail_p(w, cfg.rules[0], None)
    assert np.isnan(p[:30]).all() and np.isfinite(p[30:]).all()  # half the law's readings at least
    assert p[-1] == pytest.approx(_law_p(sold, expected, 6.0, 3), rel=1e-9)
    assert p[-1] < 0.05
    assert R.readings_needed(cfg.rules[0]) == 3 + 1 + 56


def test_a_spike_is_judged_by_the_series_own_law():
    from anomaly_assets.core.rules.business import _count_tail_p, _windows

    rng = np.random.default_rng(6)
    rule = dict(kinds=["count"], direction="above", window=2, min_ratio=1.5, floor=4, max_tail_p=0.001,
                fault_kind="unplanned_spike")
    steady = rng.poisson(6.0, 70).astype(float)
    wild = rng.negative_binomial(1.0, 1.0 / 7.0, 70).astype(float)
    for sold, flagged in ((steady, True), (wild, False)):
        sold[-2:] = [14.0, 13.0]  # 27 where 12 were expected
        days, dec = _count_series(sold, np.full(70, 6.0))
        hits = R.find_hits(_cfg(**rule), _inputs(dec), days[0], days[-1] + pd.Timedelta(days=1))
        assert (days[-1] in set(hits["ts"])) == flagged
    w = _windows(dec[dec.metric == "units_sold"].sort_values("ts").reset_index(drop=True), 2)
    p = _count_tail_p(w, _cfg(**rule).rules[0], None)
    assert p[-1] == pytest.approx(_law_p(sold, np.full(70, 6.0), 27.0, 2, "above"), rel=1e-9)  # P(total >= 27)


def test_the_law_of_demand_leaves_out_known_events():
    rng = np.random.default_rng(7)
    sold = rng.poisson(6.0, 70).astype(float)
    promo = np.arange(5, 60, 6)  # a day a week or so at 3x, in the calendar
    sold[promo] *= 3.0
    sold[-3:] = [2.0, 1.0, 2.0]
    days, dec = _count_series(sold, np.full(70, 6.0))
    events = pd.DataFrame({"entity_id": "S01-SKU1", "day": days[promo], "kind": "promotion", "name": "sale"})
    rule = dict(kinds=["count"], direction="below", window=3, max_share=0.5, stock="moving", max_tail_p=0.003,
                fault_kind="sales_drop")
    end = days[-1] + pd.Timedelta(days=1)
    assert days[-1] in set(R.find_hits(_cfg(**rule), _inputs(dec, events=events), days[0], end)["ts"])
    # the promotions taken for demand: a higher mean and a law so wide that 5 of 24 is likely enough
    assert days[-1] not in set(R.find_hits(_cfg(**rule), _inputs(dec), days[0], end)["ts"])


def test_a_stockout_is_not_a_sales_drop_with_min_cover():
    sold = np.full(70, 6.0)
    sold[-3:] = [2.0, 1.0, 1.0]  # 4 of 18
    plenty = 1000.0 - np.cumsum(sold)
    empty = plenty.copy()
    empty[-4:] = [3.0, 1.0, 0.0, 0.0]  # the shelf ran out: sales were capped, not demand
    low_before = plenty.copy()
    low_before[-4] = 10.0  # the reading before the window held less than two days of sales (12)
    enough_before = plenty.copy()
    enough_before[-4] = 20.0  # ... more than two days' (and less than the window's 18 x 2)
    rule = dict(kinds=["count"], direction="below", window=3, max_share=0.5, stock="moving", min_cover=2,
                fault_kind="sales_drop")
    for stock, flagged in ((plenty, True), (empty, False), (low_before, False), (enough_before, True)):
        days, dec = _count_series(sold, np.full(70, 6.0), stock=stock)
        end = days[-1] + pd.Timedelta(days=1)
        assert (days[-1] in set(R.find_hits(_cfg(**rule), _inputs(dec), days[0], end)["ts"])) == flagged
        assert days[-1] in set(R.find_hits(_cfg(**{**rule, "min_cover": 0}), _inputs(dec), days[0], end)["ts"])


def test_a_count_law_and_a_baseline_do_not_mix(tmp_path: Path):
    f = tmp_path / "rules.yaml"
    f.write_text("rules:\n  - {name: drop, type: business_gap, kinds: [count], max_share: 0.5, max_tail_p: 0.01,"
                 " baseline: 7}\n")
    with pytest.raises(ConfigFileError) as e:
        load_alert_rules(f)
    assert str(f) in str(e.value) and "rule 'drop' (rules[0])" in str(e.value) and "baseline" in str(e.value)


def test_the_law_of_demand_leaves_out_the_days_the_shelf_was_empty():
    rng = np.random.default_rng(8)
    sold = rng.poisson(6.0, 70).astype(float)
    sold[3:-3:4] = 0.0  # every fourth day sold nothing ...
    sold[-3:] = [2.0, 1.0, 2.0]
    rule = dict(kinds=["count"], direction="below", window=3, max_share=0.5, stock="moving", max_tail_p=0.003,
                fault_kind="sales_drop")
    empty = np.full(70, 200.0) - np.arange(70)
    empty[3:-3:4] = 0.0  # ... because the shelf was empty: those days say nothing of demand
    for stock, flagged in ((empty, True), (np.full(70, 200.0) - np.arange(70), False)):
        days, dec = _count_series(sold, np.full(70, 6.0), stock=stock)
        hits = R.find_hits(_cfg(**rule), _inputs(dec), days[0], days[-1] + pd.Timedelta(days=1))
        assert (days[-1] in set(hits["ts"])) == flagged


def test_an_expected_total_at_the_threshold_up_to_float_noise_reaches_it():
    two = 1.9999999999999996  # 2 units a day, back from the detector's log scale
    sold = [2.0] * 10 + [0.0] * 5
    on_hand = [40.0 - 2 * min(i, 9) for i in range(15)]
    dec = _dec({"units_sold": (sold, [two] * 15), "on_hand": (on_hand, on_hand)})
    cfg = _cfg(kinds=["count"], direction="below", window=3, max_share=0.1, min_expected=6, stock="frozen")
    assert 3 * two < 6 and DAYS[13] in set(R.find_hits(cfg, _inputs(dec), DAYS[0], DAYS[15])["ts"])
