"""Alert rules: each rule type's edges, dedup/cooldown/lifecycle, routing, and config validation."""

import json
import textwrap

import numpy as np
import pandas as pd
import pytest

from anomaly_assets.alert_config import AlertRules, ConfigFileError, load_alert_rules, parse_duration
from anomaly_assets.core import rules as R

T0 = pd.Timestamp("2026-03-02", tz="UTC")
START, END = T0, T0 + pd.Timedelta(days=1)
METRICS = {"temp_c": "temperature", "vib_mm_s": "vibration", "volt_v": "voltage", "amp_a": "current"}


def cfg(*rules, **top) -> AlertRules:
    return AlertRules.model_validate({"rules": list(rules), **top})


def at(minutes) -> pd.Timestamp:
    return T0 + pd.Timedelta(minutes=minutes)


def scores(points: dict[str, list[tuple[float, str]]]) -> pd.DataFrame:
    """entity -> [(minute, severity)] flagged points."""
    rows = [{"entity_id": e, "ts": at(m), "anomaly_score": 0.9999, "is_anomaly": sev != "normal", "severity": sev}
            for e, pts in points.items() for m, sev in pts]
    return pd.DataFrame(rows, columns=["entity_id", "ts", "anomaly_score", "is_anomaly", "severity"])


def explanations(points: dict[tuple[str, float], dict[str, tuple[float, float, float]]]) -> pd.DataFrame:
    """(entity, minute) -> {metric: (contribution, expected, actual)}."""
    rows = []
    for (e, m), per_metric in points.items():
        order = sorted(per_metric, key=lambda k: -per_metric[k][0])
        for rank, metric in enumerate(order, 1):
            c, x, a = per_metric[metric]
            rows.append({"entity_id": e, "ts": at(m), "metric": metric, "rank": rank, "contribution": c,
                         "family": METRICS.get(metric, metric), "expected": x, "actual": a})
    return pd.DataFrame(rows, columns=["entity_id", "ts", "metric", "rank", "contribution", "family", "expected", "actual"])


def decomposition(series: dict[tuple[str, str], list[tuple[float, float, float]]], step=60) -> pd.DataFrame:
    """(entity, metric) -> [(value, expected, residual_z)] every ``step`` minutes from T0 - len/2."""
    rows = []
    for (e, metric), pts in series.items():
        for i, (v, x, z) in enumerate(pts):
            rows.append({"entity_id": e, "metric": metric, "ts": T0 + pd.Timedelta(minutes=step * i),
                         "value": v, "expected": x, "residual": v - x, "residual_z": z})
    return pd.DataFrame(rows, columns=["entity_id", "metric", "ts", "value", "expected", "residual", "residual_z"])


def inputs(s=None, e=None, d=None, entities=None) -> R.RuleInputs:
    return R.RuleInputs(
        scores=s if s is not None else scores({}), explanations=e if e is not None else explanations({}),
        decomposition=d if d is not None else decomposition({}),
        entities=entities if entities is not None else pd.DataFrame(columns=["entity_id", "site", "tags", "team"]),
        families=METRICS, units={"vib_mm_s": "mm/s"},
    )


# ------------------------------------------------------------------------------------------------ burst
BURST = {"name": "burst", "type": "burst", "count": 3, "within": "15min", "severity": "critical"}


def test_burst_window_is_inclusive_at_both_ends():
    c = cfg(BURST)
    h = R.find_hits(c, inputs(scores({"a": [(0, "warning"), (5, "warning"), (15, "warning")]})), START, END)
    assert list(h["ts"]) == [at(15)] and h["measure"].tolist() == [3.0] and h["since"].tolist() == [at(0)]
    # one second more than the window: the first point falls out
    s = scores({"a": [(0, "warning"), (5, "warning"), (15 + 1 / 60, "warning")]})
    assert R.find_hits(c, inputs(s), START, END).empty


def test_burst_counts_each_entity_alone_and_only_flagged_points():
    c = cfg(BURST)
    s = scores({"a": [(0, "warning"), (10, "warning")], "b": [(5, "warning"), (6, "normal"), (7, "normal")]})
    assert R.find_hits(c, inputs(s), START, END).empty
    s = scores({"a": [(0, "warning"), (1, "warning"), (2, "warning"), (3, "warning")]})
    assert R.find_hits(c, inputs(s), START, END)["measure"].tolist() == [3.0, 4.0]


def test_burst_min_severity_and_window_reaching_before_the_run():
    c = cfg({**BURST, "min_severity": "critical"})
    s = scores({"a": [(0, "critical"), (5, "warning"), (10, "critical")]})
    assert R.find_hits(c, inputs(s), START, END).empty
    # earlier points (the lookback) fill the window; hits are only emitted inside [start, end)
    s = scores({"a": [(-10, "critical"), (-5, "critical"), (2, "critical")]})
    h = R.find_hits(c, inputs(s), START, END)
    assert list(h["ts"]) == [at(2)]
    assert R.find_hits(c, inputs(s), at(3), END).empty


# ------------------------------------------------------------------------------------------------ dominant family
POWER = {"name": "power", "type": "dominant_family", "families": ["voltage", "current"], "min_share": 0.45,
         "min_each": 0.1, "fault_kind": "power_spike"}


def _power_point(volt, amp, temp, dv=10.0, flagged=True):
    s = scores({"a": [(0, "warning" if flagged else "normal")]})
    e = explanations({("a", 0): {"volt_v": (volt, 400.0, 400.0 + dv), "amp_a": (amp, 50.0, 58.0),
                                 "temp_c": (temp, 60.0, 61.0)}})
    return inputs(s, e)


def test_dominant_family_share_is_inclusive_and_each_family_must_carry_its_part():
    c = cfg(POWER)
    h = R.find_hits(c, _power_point(0.25, 0.20, 0.55), START, END)  # 0.45 exactly
    assert len(h) == 1 and h["measure"].iloc[0] == pytest.approx(0.45) and h["metric"].iloc[0] == "volt_v"
    assert R.find_hits(c, _power_point(0.25, 0.199, 0.551), START, END).empty  # 0.449
    # current alone carries 0.9: a load change, not power instability (voltage below min_each)
    assert R.find_hits(c, _power_point(0.05, 0.9, 0.05), START, END).empty


def test_dominant_family_needs_a_flagged_point_and_a_material_deviation():
    c = cfg(POWER, materiality={"volt_v": 12.0, "amp_a": 9.0})
    assert R.find_hits(c, _power_point(0.5, 0.4, 0.1), START, END).empty  # 10 V < 12 V and 8 A < 9 A
    assert len(R.find_hits(c, _power_point(0.5, 0.4, 0.1, dv=12.0), START, END)) == 1  # 12 V: at the floor
    assert R.find_hits(cfg(POWER), _power_point(0.5, 0.4, 0.1, flagged=False), START, END).empty


# ------------------------------------------------------------------------------------------------ sustained deviation
GHOST = {"name": "ghost_stock", "type": "sustained_deviation", "families": ["sales"], "direction": "below",
         "periods": 3, "floor": 1.0, "fault_kind": "ghost_stock"}


def _sales(values, expected=3.0, entity="store-1"):
    return decomposition({(entity, "sales_units"): [(v, expected, (v - expected) / 1.0) for v in values]})


def test_sustained_deviation_needs_k_consecutive_periods_at_least_the_floor():
    c = cfg(GHOST)
    h = R.find_hits(c, inputs(d=_sales([3, 0, 0, 0, 2.5, 3])), START, END)
    assert list(h["ts"]) == [at(180)] and h["since"].iloc[0] == at(60) and h["measure"].iloc[0] == 3
    assert R.find_hits(c, inputs(d=_sales([3, 0, 0, 3, 0, 0, 3])), START, END).empty  # K-1, a break, K-1
    h = R.find_hits(c, inputs(d=_sales([2, 2, 2])), START, END)  # exactly 1.0 below: counts
    assert list(h["ts"]) == [at(120)]
    assert R.find_hits(c, inputs(d=_sales([2.5, 2.5, 2.5])), START, END).empty  # 0.5 below the floor
    assert R.find_hits(c, inputs(d=_sales([5, 5, 5])), START, END).empty  # above, rule says below


def test_sustained_runs_do_not_join_across_entities_and_count_from_the_lookback():
    c = cfg(GHOST)
    d = pd.concat([_sales([3, 3, 0, 0], entity="store-1"), _sales([0, 3, 3, 3], entity="store-2")])
    assert R.find_hits(c, inputs(d=d), START, END).empty
    # a run that began before the day: the hit is at the first reading inside the day
    h = R.find_hits(c, inputs(d=_sales([0, 0, 0, 0])), at(120), END)
    assert list(h["ts"]) == [at(120), at(180)] and h["since"].iloc[0] == at(0)


def test_stuck_sensor_is_identical_readings_of_a_metric_that_moves():
    c = cfg({"name": "stuck", "type": "sustained_deviation", "condition": "stuck", "periods": 4})
    moving = list(np.linspace(1, 2, 8))
    d = decomposition({("p", "temp_c"): [(v, 1.5, 0.0) for v in moving + [2.0, 2.0, 2.0] + [2.5]]})
    h = R.find_hits(c, inputs(d=d), START, END)
    # readings 7..10 are 2.0 (the last moving one and three frozen ones): 4 identical at index 10
    assert list(h["ts"]) == [at(600)] and h["metric"].iloc[0] == "temp_c" and h["measure"].iloc[0] == 4
    d3 = decomposition({("p", "temp_c"): [(v, 1.5, 0.0) for v in moving + [2.0, 2.0] + [2.5]]})
    assert R.find_hits(c, inputs(d=d3), START, END).empty  # only 3 identical
    flat = decomposition({("p", "setpoint"): [(5.0, 5.0, 0.0)] * 12})
    assert R.find_hits(c, inputs(d=flat), START, END).empty  # a metric that never moves is not stuck


# ------------------------------------------------------------------------------------------------ fleet outlier
OUTLIER = {"name": "outlier", "type": "fleet_outlier", "peer_by": "site", "z": 4.0, "min_peers": 4, "periods": 2}


def _fleet(z_of, n=6, points=3):
    series = {(f"p{i}", "temp_c"): [(60 + z_of(i, t), 60.0, z_of(i, t)) for t in range(points)] for i in range(n)}
    ents = pd.DataFrame({"entity_id": [f"p{i}" for i in range(n)], "site": "s1", "tags": [[]] * n, "team": None})
    return decomposition(series), ents


def test_fleet_outlier_is_departure_from_peers_at_the_same_time():
    d, ents = _fleet(lambda i, t: 8.0 if i == 0 else 0.1 * ((i + t) % 3 - 1))
    h = R.find_hits(cfg(OUTLIER), inputs(d=d, entities=ents), START, END)
    assert set(h["entity_id"]) == {"p0"} and list(h["ts"]) == [at(60), at(120)]  # periods=2
    # the whole site moves together (a heat wave): nobody is an outlier
    d, ents = _fleet(lambda i, t: 8.0 + 0.1 * ((i + t) % 3 - 1))
    assert R.find_hits(cfg(OUTLIER), inputs(d=d, entities=ents), START, END).empty


def test_fleet_outlier_needs_enough_peers_and_a_material_residual():
    d, ents = _fleet(lambda i, t: 8.0 if i == 0 else 0.0, n=4)  # 3 peers < min_peers 4
    assert R.find_hits(cfg(OUTLIER), inputs(d=d, entities=ents), START, END).empty
    d, ents = _fleet(lambda i, t: 8.0 if i == 0 else 0.0)
    assert R.find_hits(cfg({**OUTLIER, "floor": 9.0}), inputs(d=d, entities=ents), START, END).empty


def test_peers_are_inferred_from_ids_when_no_site_is_known():
    d, _ = _fleet(lambda i, t: 8.0 if i == 0 else 0.0)
    h = R.find_hits(cfg(OUTLIER), inputs(d=d), START, END)
    assert set(h["entity_id"]) == {"p0"}  # p0..p5 -> group "p"


# ------------------------------------------------------------------------------------------------ folding
def _hits(*rows):
    h = pd.DataFrame([{"rule": r, "entity_id": e, "ts": at(m), "measure": 3.0, "margin": 0.5, "metric": "temp_c",
                       "family": "temperature", "since": at(m), "score_severity": sev}
                      for r, e, m, sev in rows], columns=R.HIT_COLUMNS)
    h["ts"] = h["ts"].astype("datetime64[us, UTC]")
    return h


BURST_H = {**BURST, "within": "3h", "resolve_after": "2h", "cooldown": "1h"}


def test_one_alert_per_entity_and_rule_until_quiet_then_cooldown_reopens_then_new():
    c = cfg(BURST_H)
    h = _hits(("burst", "a", 0, "warning"), ("burst", "a", 120, "critical"),  # within resolve_after
              ("burst", "a", 300, "warning"),  # 3h gap: resolved at 240, reopened within cooldown
              ("burst", "a", 700, "warning"),  # > resolve_after + cooldown: a new alert
              ("burst", "b", 60, "warning"))  # another entity: its own alert
    alerts = R.fold_alerts(h, c)
    got = sorted((a.entity_id, a.opened_at, a.last_seen_at, a.hits) for a in alerts)
    assert got == [("a", at(0), at(300), 3), ("a", at(700), at(700), 1), ("b", at(60), at(60), 1)]
    again = R.fold_alerts(h, c)
    assert sorted(a.id for a in alerts) == sorted(a.id for a in again)  # deterministic ids


def test_rows_status_follow_the_data_clock_and_people():
    c = cfg(BURST_H)
    h = _hits(("burst", "a", 0, "warning"), ("burst", "a", 60, "warning"))
    inp = inputs(scores({"a": [(0, "warning"), (60, "warning")]}))
    rows = R.alert_rows(R.fold_alerts(h, c), c, inp, clock=at(60 + 120))
    assert rows["status"].tolist() == ["open"]  # exactly resolve_after: still open
    rows = R.alert_rows(R.fold_alerts(h, c), c, inp, clock=at(60 + 121))
    assert rows["status"].tolist() == ["resolved"] and rows["resolved_at"].iloc[0] == at(180)
    aid = rows["alert_id"].iloc[0]
    acked = R.alert_rows(R.fold_alerts(h, c, human={aid: "acknowledged"}), c, inp, clock=at(60))
    assert acked["status"].tolist() == ["acknowledged"]


def test_a_resolved_alert_absorbs_its_hits_and_later_hits_open_a_new_one():
    c = cfg(BURST_H)
    first = R.alert_rows(R.fold_alerts(_hits(("burst", "a", 0, "warning")), c), c, inputs(), clock=at(0))
    first = first.assign(status="resolved")  # a person resolved it
    aid = first["alert_id"].iloc[0]
    later = _hits(("burst", "a", 0, "warning"), ("burst", "a", 30, "warning"))
    folded = R.fold_alerts(later, c, prior=first, human={aid: "resolved"})
    by_id = {a.id: a for a in folded}
    assert by_id[aid].frozen and by_id[aid].last_seen_at == at(0)
    new = [a for a in folded if a.id != aid]
    assert len(new) == 1 and new[0].opened_at == at(30)


def test_alerts_continue_from_a_stored_alert_of_an_earlier_day():
    c = cfg(BURST_H)
    day1 = R.alert_rows(R.fold_alerts(_hits(("burst", "a", -30, "warning")), c), c, inputs(), clock=at(-30))
    day2 = R.fold_alerts(_hits(("burst", "a", 30, "critical")), c, prior=day1)
    assert len(day2) == 1 and day2[0].id == day1["alert_id"].iloc[0]
    assert day2[0].severity == "critical" and day2[0].hits == 2 and day2[0].last_seen_at == at(30)


# ------------------------------------------------------------------------------------------------ severity, routing
def test_severity_mapping():
    c = cfg({**BURST, "severity": {"warning": 3, "critical": 5}})
    rule = c.rules[0]
    assert [R.hit_severity(rule, m, "normal") for m in (2, 3, 4.9, 5)] == ["info", "warning", "warning", "critical"]
    fs = cfg({**BURST, "severity": "from_scores"}).rules[0]
    assert [R.hit_severity(fs, 3, s) for s in ("warning", "critical", "normal")] == ["warning", "critical", "warning"]
    assert R.hit_severity(c.rules[0].model_copy(update={"severity": "info"}), 9, "critical") == "info"


ROUTING = {"default_team": "operations", "routes": [
    {"fault_kind": "bearing_wear", "team": "maintenance"}, {"family": "temperature", "team": "thermal"},
    {"tag": "critical", "family": "voltage", "team": "electrical_oncall"}, {"site": "site-9", "team": "site9"}]}


def test_routing_first_match_wins_then_entity_team_then_default():
    c = cfg(BURST, {**BURST, "name": "own", "team": "special"}, routing=ROUTING)
    burst, own = c.rules
    assert R.route(c, burst, fault_kind="bearing_wear", family="temperature") == "maintenance"
    assert R.route(c, burst, family="temperature") == "thermal"
    assert R.route(c, burst, family="voltage", tags=("outdoor",)) == "operations"
    assert R.route(c, burst, family="voltage", tags=("outdoor", "critical")) == "electrical_oncall"
    assert R.route(c, burst, family="current", site="site-9") == "site9"
    assert R.route(c, burst, family="current", entity_team="pump_crew") == "pump_crew"
    assert R.route(c, own, fault_kind="bearing_wear") == "special"


def test_a_generic_alert_takes_the_diagnosis_of_the_same_entity_and_is_routed_by_it():
    c = cfg(BURST_H, {**POWER, "name": "bearing", "families": ["vibration"], "min_each": 0, "fault_kind": "bearing_wear",
                      "action": "Grease the bearing"}, routing=ROUTING)
    h = _hits(("bearing", "a", 0, "warning"), ("burst", "a", 30, "critical"), ("burst", "b", 30, "critical"))
    folded = {(a.rule, a.entity_id): a for a in R.fold_alerts(h, c)}
    assert folded[("burst", "a")].fault_kind == "bearing_wear"
    assert folded[("burst", "b")].fault_kind is None  # another entity's diagnosis does not leak
    rows = R.alert_rows(list(folded.values()), c, inputs(), clock=at(30)).set_index(["rule", "entity_id"])
    assert rows.loc[("burst", "a"), "team"] == "maintenance"
    assert rows.loc[("burst", "a"), "why"].endswith("Likely bearing wear. Grease the bearing")
    assert rows.loc[("burst", "b"), "team"] == "thermal"  # by its own family


def test_an_alert_says_what_why_and_how_sure_with_evidence():
    d, ents = _fleet(lambda i, t: 8.0 if i == 0 else 0.0)
    s = scores({"p0": [(0, "warning"), (60, "critical"), (120, "critical")]})
    e = explanations({("p0", m): {"temp_c": (0.9, 60.0, 68.0), "vib_mm_s": (0.1, 1.0, 1.1)} for m in (0, 60, 120)})
    c = cfg({**BURST, "within": "3h", "action": "Check the cooling"}, routing=ROUTING)
    inp = inputs(s, e, d, ents)
    rows = R.alert_rows(R.fold_alerts(R.find_hits(c, inp, START, END), c), c, inp, clock=at(120))
    a = rows.iloc[0]
    assert a["team"] == "thermal" and a["severity"] == "critical" and 0 < a["confidence"] <= 0.7
    assert "temp_c 68 vs 60 expected (+8.0σ)" in a["why"] and "Check the cooling" in a["why"]
    ev = json.loads(a["evidence"])
    assert ev["expected"] == 60.0 and ev["actual"] == 68.0 and ev["sigma"] == 8.0
    assert ev["top_metrics"][0]["metric"] == "temp_c" and ev["family_shares"]["temperature"] == pytest.approx(0.9)
    assert ev["peers"]["group"] == "s1" and ev["peers"]["peers"] == 5 and ev["peers"]["robust_z"] > 4


def test_confidence_grows_with_support_and_follows_feedback():
    c = cfg(BURST)
    rule = c.rules[0]
    assert R.confidence(0.7, 0.0, 1) < R.confidence(0.7, 0.0, 10) <= 0.7
    assert R.rule_precision(c, rule, {"burst": (0, 20)}) < 0.2 < 0.9 < R.rule_precision(c, rule, {"burst": (50, 0)})


# ------------------------------------------------------------------------------------------------ config validation
def _load(tmp_path, text, **kw):
    p = tmp_path / "alert_rules.yaml"
    p.write_text(textwrap.dedent(text))
    return load_alert_rules(p, **kw)


@pytest.mark.parametrize("rule, expected", [
    ("{name: b, type: bursty, count: 3, within: 15min}", ["rule 'b' (rules[0])", "'bursty'", "burst, dominant_family"]),
    ("{name: b, type: burst, within: 15min}", ["rule 'b'", "field 'count'", "required"]),
    ("{name: b, type: burst, count: 1, within: 15min}", ["rule 'b'", "field 'count'", "found 1", "at least 2"]),
    ("{name: b, type: burst, count: 3, within: 15 minutes}", ["field 'within'", "'15 minutes'", "'15min', '3h'"]),
    ("{name: p, type: dominant_family, families: [voltage], min_share: 45}",
     ["rule 'p'", "field 'min_share'", "found 45", "at most 1"]),
    ("{name: b, type: burst, count: 3, within: 15min, windw: 3}", ["field 'windw'", "found 3", "spelling"]),
    ("{name: b, type: burst, count: 3, within: 15min, severity: urgent}",
     ["field 'severity'", "'urgent'", "warning, critical, from_scores"]),
    ("{name: b, type: burst, count: 3, within: 15min, severity: {warning: 5, critical: 3}}",
     ["field 'severity", "critical (3.0) must be >= warning (5.0)"]),
    ("{name: Bad Name, type: burst, count: 3, within: 15min}", ["field 'name'", "'Bad Name'", "lower_snake_case"]),
    ("{name: g, type: sustained_deviation, periods: 3}", ["rule 'g'", "'floor'", "'min_z'"]),
    ("{name: o, type: fleet_outlier, peer_by: region}", ["rule 'o'", "field 'peer_by'", "'region'", "tag:<tag>"]),
    ("{name: s, type: sustained_deviation, periods: 3, floor: 1, direction: up}",
     ["field 'direction'", "'up'", "'above', 'below' or 'either'"]),
])
def test_invalid_rules_fail_naming_rule_field_value_and_what_is_allowed(tmp_path, rule, expected):
    with pytest.raises(ConfigFileError) as err:
        _load(tmp_path, f"rules:\n  - {rule}\n")
    msg = str(err.value)
    assert "alert_rules.yaml" in msg
    for part in expected:
        assert part in msg, f"{part!r} not in:\n{msg}"


def test_invalid_files_routing_and_families(tmp_path):
    with pytest.raises(ConfigFileError, match="used twice"):
        _load(tmp_path, "rules:\n  - {name: b, type: burst, count: 3, within: 1h}\n  - {name: b, type: burst, count: 4, within: 1h}\n")
    with pytest.raises(ConfigFileError, match="at least one of fault_kind, family, tag, site, rule"):
        _load(tmp_path, "routing:\n  routes:\n    - {team: x}\n")
    with pytest.raises(ConfigFileError, match=r"rule 'v'.*unknown family 'vibraton'.*allowed: .*vibration"):
        _load(tmp_path, "rules:\n  - {name: v, type: dominant_family, families: [vibraton], min_share: 0.5}\n",
              known_families={"vibration", "temperature"})
    with pytest.raises(ConfigFileError, match="not valid YAML"):
        _load(tmp_path, "rules: [\n")
    with pytest.raises(ConfigFileError, match="'rules' must be a list"):
        _load(tmp_path, "rules: {name: b}\n")


def test_the_shipped_rules_load_and_durations_parse():
    c = load_alert_rules()
    assert {r.type for r in c.rules} == {"burst", "dominant_family", "sustained_deviation", "fleet_outlier", "business_gap"}
    assert parse_duration("15min").total_seconds() == 900 and parse_duration(90).total_seconds() == 5400
    assert parse_duration("2d").days == 2


def test_readings_of_a_stuck_sensor_make_no_other_alert():
    c = cfg({"name": "stuck", "type": "sustained_deviation", "condition": "stuck", "periods": 3},
            {"name": "hot", "type": "sustained_deviation", "metrics": ["temp_c"], "direction": "above",
             "periods": 2, "floor": 1.0})
    moving = [(60 + 0.1 * i, 60.0, 0.1) for i in range(8)]
    frozen = [(70.0, 60.0, 5.0)] * 4  # frozen at a value the expectation has moved away from
    d = decomposition({("p", "temp_c"): moving + frozen, ("q", "temp_c"): moving + [(70 + i, 60.0, 5.0) for i in range(4)]})
    h = R.find_hits(c, inputs(d=d), START, END)
    assert set(h[h["entity_id"] == "p"]["rule"]) == {"stuck"}
    assert set(h[h["entity_id"] == "q"]["rule"]) == {"hot"}  # really hot, moving: not a sensor problem


def test_dominant_family_direction_follows_the_lead_metric_sign():
    wear = {**POWER, "name": "wear", "families": ["voltage"], "min_each": 0, "direction": "above"}
    assert len(R.find_hits(cfg(wear), _power_point(0.6, 0.2, 0.2, dv=10.0), START, END)) == 1
    assert R.find_hits(cfg(wear), _power_point(0.6, 0.2, 0.2, dv=-10.0), START, END).empty


def test_peer_check_drops_hits_where_the_whole_site_moves():
    hot = {"name": "hot", "type": "sustained_deviation", "metrics": ["temp_c"], "direction": "above",
           "periods": 2, "floor": 1.0, "peer_z": 3.0}
    d, ents = _fleet(lambda i, t: 8.0 + 0.1 * ((i + t) % 3 - 1))  # everyone 8σ hot: the weather
    assert R.find_hits(cfg(hot), inputs(d=d, entities=ents), START, END).empty
    assert len(R.find_hits(cfg({**hot, "peer_z": 0}), inputs(d=d, entities=ents), START, END)) == 12
    d, ents = _fleet(lambda i, t: 8.0 if i == 0 else 0.1 * ((i + t) % 3 - 1))  # only p0
    assert set(R.find_hits(cfg(hot), inputs(d=d, entities=ents), START, END)["entity_id"]) == {"p0"}
    d, ents = _fleet(lambda i, t: 8.0, n=3)  # too few peers to tell: keep
    assert len(R.find_hits(cfg(hot), inputs(d=d, entities=ents), START, END)) == 6


def test_min_hits_keeps_an_alert_pending_until_it_has_them_then_it_opens_or_expires():
    c = cfg({**BURST_H, "min_hits": 2})
    inp = inputs()
    one = R.alert_rows(R.fold_alerts(_hits(("burst", "a", 0, "warning")), c), c, inp, clock=at(0))
    assert one["status"].tolist() == ["pending"]
    assert R.alert_rows(R.fold_alerts(_hits(("burst", "a", 0, "warning")), c), c, inp, clock=at(121))[
        "status"].tolist() == ["expired"]
    # the second hit comes the next day: the stored pending alert continues and opens, same id
    two = R.fold_alerts(_hits(("burst", "a", 60, "warning")), c, prior=one)
    rows = R.alert_rows(two, c, inp, clock=at(60))
    assert rows["status"].tolist() == ["open"] and rows["alert_id"].tolist() == one["alert_id"].tolist()
    assert rows["opened_at"].tolist() == [at(0)] and rows["hits"].tolist() == [2]


def test_the_documented_rules_example_is_valid(tmp_path):
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "alerts.md").read_text()
    block = doc.split("## Rules as data", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    c = _load(tmp_path, block)
    assert {r.type for r in c.rules} == {"burst", "dominant_family", "sustained_deviation", "fleet_outlier", "business_gap"}


# ------------------------------------------------------------------------------------------------ inputs
def test_rules_read_the_decomposition_in_any_row_order():
    """RuleInputs sorts the decomposition once; every rule that counts runs relies on it."""
    stuck = {"name": "stuck", "type": "sustained_deviation", "condition": "stuck", "periods": 4}
    moving = list(np.linspace(1, 2, 8))
    fleet, ents = _fleet(lambda i, t: 8.0 if i == 0 else 0.1 * ((i + t) % 3 - 1), points=6)
    d = pd.concat([fleet, _sales([3, 0, 0, 0, 2.5, 3], entity="p1"),
                   decomposition({("p2", "vib_mm_s"): [(v, 1.5, 0.0) for v in moving + [2.0] * 3 + [2.5]]})],
                  ignore_index=True)
    c = cfg(GHOST, stuck, OUTLIER)
    ordered = R.find_hits(c, inputs(d=d, entities=ents), START, END)
    assert set(ordered["rule"]) == {GHOST["name"], "stuck", "outlier"}
    for seed in range(3):
        shuffled = d.sample(frac=1.0, random_state=seed)
        pd.testing.assert_frame_equal(R.find_hits(c, inputs(d=shuffled, entities=ents), START, END), ordered)


@pytest.mark.parametrize("mapping", [{"a": "x", "b": None}, pd.Series(["g1", None], index=["a", "c"])])
def test_map_distinct_is_series_map(mapping):
    keys = pd.Series(["a", "b", "a", None, "c", "d", "a"], dtype="str", index=[5, 3, 9, 1, 0, 2, 7], name="k")
    pd.testing.assert_series_equal(R.inputs.map_distinct(keys, mapping), keys.map(mapping))
    pd.testing.assert_series_equal(R.inputs.map_distinct(keys.astype(object), mapping), keys.astype(object).map(mapping))


def test_evidence_at_an_unflagged_point_breaks_ties_by_metric_name_whatever_the_row_order():
    rows = [("vib_mm_s", 3.0, 1.0, 4.0), ("temp_c", 60.0, 60.0, 0.0), ("amp_a", 50.0, 50.0, 0.0),
            ("volt_v", 400.0, 400.0, 0.0)]
    for order in (rows, rows[::-1]):
        d = decomposition({("p1", m): [(v, x, z)] for m, v, x, z in order})
        top = R.EvidenceBuilder(inputs(d=d)).point("p1", T0)["top_metrics"]
        assert [t["metric"] for t in top] == ["vib_mm_s", "amp_a", "temp_c"]
