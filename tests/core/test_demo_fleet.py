"""Tests for the seeded demo fleet generator (anomaly_assets.demo.fleet)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anomaly_assets.demo.fleet import (
    CSV_HEADER,
    FAULT_KINDS,
    HISTORY_DAYS,
    METRICS,
    FleetSummary,
    generate_fleet,
    simulate_fleet,
)
from anomaly_assets.demo.fleet_csv import _fixed3

START = pd.Timestamp("2026-09-07", tz="UTC")
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
VALUE_3DP = re.compile(r"^-?\d+\.\d{3}$")


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read_landing(landing: Path) -> pd.DataFrame:
    frames = [pd.read_csv(p, dtype={"entity_id": str, "timestamp": str}) for p in sorted(landing.glob("*/*.csv"))]
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def default_fleet(tmp_path_factory) -> tuple[FleetSummary, Path]:
    root = tmp_path_factory.mktemp("fleet_a")
    return generate_fleet(root / "landing"), root


@pytest.fixture(scope="module")
def sim():
    """The same default fleet in memory, with the fault-free values."""
    return simulate_fleet(keep_clean=True)


# --------------------------------------------------------------------------- #
# summary / layout
# --------------------------------------------------------------------------- #
def test_summary(default_fleet):
    s, root = default_fleet
    assert s.entities == 200
    assert s.sites == 10
    assert s.metrics == METRICS
    assert s.periods == 35 * 24
    assert s.rows == 200 * 4 * 35 * 24  # long-format observations
    assert s.csv_rows == 200 * 35 * 24
    assert s.files == 35 * 10
    assert s.faulty_entities == 30  # 15 %
    assert set(s.faults_by_kind) == set(FAULT_KINDS)
    assert all(n > 0 for n in s.faults_by_kind.values())
    assert s.first_timestamp == START
    assert s.last_timestamp == START + pd.Timedelta(days=35) - pd.Timedelta(hours=1)
    assert s.landing_dir == root / "landing"
    assert s.labels_path == root / "labels.csv"
    assert s.faults_path == root / "faults.csv"
    assert s.entities_path == root / "entities.csv"
    hash(s)  # frozen and hashable


def test_layout_header_and_format(default_fleet):
    s, root = default_fleet
    landing = root / "landing"
    days = sorted(p.name for p in landing.iterdir())
    assert days == [(START + pd.Timedelta(days=d)).strftime("%Y-%m-%d") for d in range(35)]
    assert not list(landing.rglob(".*")), "temporary files left behind"
    for day in days:
        assert sorted(p.name for p in (landing / day).iterdir()) == [f"site-{k:02d}.csv" for k in range(1, 11)]
    text = (landing / days[20] / "site-03.csv").read_text()
    lines = text.splitlines()
    assert text.endswith("\n") and "\r" not in text
    assert lines[0] + "\n" == CSV_HEADER
    assert lines[0] == "entity_id,timestamp,bearing_temp_c,vibration_mm_s,voltage_v,current_a"
    assert len(lines) == 1 + 20 * 24
    ids = sorted({ln.split(",")[0] for ln in lines[1:]})
    assert ids == [f"pump-{i:04d}" for i in range(41, 61)]
    for ln in lines[1:]:
        ent, ts, *vals = ln.split(",")
        assert ISO_Z.match(ts) and ts.startswith(days[20])
        assert len(vals) == 4 and all(VALUE_3DP.match(v) for v in vals)


def test_entities_file(default_fleet):
    s, _ = default_fleet
    ent = pd.read_csv(s.entities_path)
    assert list(ent.columns) == ["entity_id", "site", "model", "tags"]
    assert len(ent) == 200 and ent.entity_id.is_unique
    assert ent.entity_id.iloc[0] == "pump-0001" and ent.entity_id.iloc[-1] == "pump-0200"
    assert ent.groupby("site").size().eq(20).all()
    assert ent.tags.str.match(r"^(indoor|outdoor)(;critical)?$").all()


def test_csv_equals_simulation_and_row_count(default_fleet, sim):
    s, root = default_fleet
    df = _read_landing(root / "landing")
    assert df[list(METRICS)].notna().sum().sum() == s.entities * 4 * s.periods == s.rows
    df = df.sort_values(["entity_id", "timestamp"], ignore_index=True)
    wide = sim.to_wide()
    assert (df.entity_id.to_numpy() == wide.entity_id.to_numpy()).all()
    assert (pd.to_datetime(df.timestamp, utc=True).to_numpy() == wide.timestamp.to_numpy()).all()
    np.testing.assert_array_equal(df[list(METRICS)].to_numpy(), wide[list(METRICS)].to_numpy())


# --------------------------------------------------------------------------- #
# determinism
# --------------------------------------------------------------------------- #
def test_same_seed_is_byte_identical(default_fleet, tmp_path):
    _, root_a = default_fleet
    generate_fleet(tmp_path / "landing")
    a, b = _all_files(root_a), _all_files(tmp_path)
    assert a.keys() == b.keys()
    assert len(a) == 350 + 3
    assert all(a[k] == b[k] for k in a)


def test_different_seed_differs(default_fleet, tmp_path):
    _, root_a = default_fleet
    generate_fleet(tmp_path / "landing", seed=8)
    a, b = _all_files(root_a), _all_files(tmp_path)
    assert a.keys() == b.keys()
    assert a["labels.csv"] != b["labels.csv"]
    assert all(a[k] != b[k] for k in a if k.startswith("landing"))


# --------------------------------------------------------------------------- #
# labels / faults
# --------------------------------------------------------------------------- #
def test_label_files(default_fleet, sim):
    s, _ = default_fleet
    labels = pd.read_csv(s.labels_path, dtype=str)
    faults = pd.read_csv(s.faults_path, dtype=str)
    assert list(labels.columns) == ["entity_id", "start", "end", "metrics"]
    assert list(faults.columns) == ["entity_id", "fault_kind", "start", "end", "metrics"]
    pd.testing.assert_frame_equal(labels, faults.drop(columns="fault_kind"))
    pd.testing.assert_frame_equal(labels, sim.labels_frame().astype(str))
    assert labels.start.str.match(ISO_Z.pattern).all() and labels.end.str.match(ISO_Z.pattern).all()
    assert (pd.to_datetime(labels.end) >= pd.to_datetime(labels.start)).all()
    assert set(faults.fault_kind) == set(FAULT_KINDS)
    assert faults.fault_kind.value_counts().to_dict() == dict(s.faults_by_kind)
    metrics = {m for ms in labels.metrics for m in ms.split(";")}
    assert metrics <= set(METRICS)
    expected = {
        "bearing_wear": {"vibration_mm_s;bearing_temp_c"},
        "overheating": {"bearing_temp_c"},
        "power_spike": {"voltage_v;current_a"},
        "level_shift": {"current_a"},
    }
    for kind, ms in expected.items():
        assert set(faults.loc[faults.fault_kind == kind, "metrics"]) == ms
    stuck = faults.loc[faults.fault_kind == "stuck_sensor", "metrics"]
    assert stuck.isin(METRICS).all()
    # one incident per faulty entity
    assert faults.groupby("entity_id").fault_kind.nunique().eq(1).all()
    assert faults.entity_id.nunique() == s.faulty_entities


def test_no_fault_in_history(default_fleet, sim):
    s, _ = default_fleet
    labels = pd.read_csv(s.labels_path)
    history_end = START + pd.Timedelta(days=HISTORY_DAYS)
    assert (pd.to_datetime(labels.start) >= history_end).all()
    # and nothing at all was changed in the history
    hist = HISTORY_DAYS * 24
    np.testing.assert_array_equal(sim.values[:, :, :hist], sim.clean[:, :, :hist])
    # faults land in the last ~60 %
    assert (pd.to_datetime(labels.start) >= START + pd.Timedelta(days=0.4 * 35)).all()


def test_labels_match_injected_windows(sim):
    changed = sim.values != sim.clean  # (entity, metric, time)
    mask = sim.label_mask()
    # every change is inside a labeled window ...
    assert not (changed & ~mask[:, None, :]).any()
    # ... of exactly the labeled metrics, and every window contains a change
    for f in sim.faults:
        window = changed[f.entity_idx, :, f.start_idx : f.end_idx + 1]
        touched = {METRICS[m] for m in np.flatnonzero(window.any(axis=1))}
        assert touched == set(f.metrics), f
        assert f.start == sim.timestamps[f.start_idx] and f.end == sim.timestamps[f.end_idx]
    # every labeled entity/time has a change (windows are not padded) except
    # stuck-sensor points that happen to equal the frozen value
    assert changed.any(axis=1)[mask].mean() > 0.99


_WEEKEND = np.asarray(pd.date_range(START, periods=35 * 24, freq="1h").day_of_week) >= 5


def _same_hour_history(x: np.ndarray, t: int, ppd: int = 24) -> np.ndarray:
    """Values at the same hour of the same day type (weekday/weekend) in the history."""
    hist = np.arange(HISTORY_DAYS * ppd)
    keep = (hist % ppd == t % ppd) & (_WEEKEND[hist] == _WEEKEND[t])
    return x[hist[keep]]


def _z(x: np.ndarray, t: int) -> float:
    h = _same_hour_history(x, t)
    return float((x[t] - h.mean()) / h.std())


def _faults(sim, kind):
    fs = [f for f in sim.faults if f.fault_kind == kind]
    assert fs
    return fs


def test_bearing_wear_is_visible(sim):
    vib, temp = METRICS.index("vibration_mm_s"), METRICS.index("bearing_temp_c")
    for f in _faults(sim, "bearing_wear"):
        x = sim.values[f.entity_idx, vib]
        late = range(f.start_idx + 3 * (f.end_idx - f.start_idx) // 4, f.end_idx + 1)
        z = np.array([_z(x, t) for t in late])
        assert np.median(z) > 3.0, f
        # clearly higher than the same hours before the fault
        before = np.array([_same_hour_history(x, t).mean() for t in late])
        assert (x[list(late)] - before).mean() > 0.3  # mm/s
        # temperature rises a little (less than vibration, in sigma)
        xt = sim.values[f.entity_idx, temp] - sim.clean[f.entity_idx, temp]
        assert 0.5 < xt[f.end_idx] < 4.0


def test_other_faults_are_visible_but_not_huge(sim):
    temp, volt, cur = (METRICS.index(m) for m in ("bearing_temp_c", "voltage_v", "current_a"))
    for f in _faults(sim, "overheating"):
        x = sim.values[f.entity_idx, temp]
        d = x - sim.clean[f.entity_idx, temp]
        assert 2.0 < d[f.end_idx] < 8.0  # degC at the peak
        assert _z(x, f.end_idx) > 2.0
    for f in _faults(sim, "power_spike"):
        for m, lo, hi in ((volt, 3.0, 15.0), (cur, 4.0, 20.0)):
            d = (sim.values[f.entity_idx, m] - sim.clean[f.entity_idx, m])[f.start_idx : f.end_idx + 1]
            assert (lo < d).all() and (d < hi).all()
    for f in _faults(sim, "level_shift"):
        d = (sim.values[f.entity_idx, cur] - sim.clean[f.entity_idx, cur])[f.start_idx : f.end_idx + 1]
        assert np.allclose(d, d[0], atol=2e-3) and 5.0 < abs(d[0]) < 15.0  # a step, in A
        assert f.end_idx - f.start_idx + 1 >= 24  # a day or more
    for f in _faults(sim, "stuck_sensor"):
        (m,) = (METRICS.index(name) for name in f.metrics)
        x = sim.values[f.entity_idx, m, f.start_idx - 1 : f.end_idx + 1]
        assert f.end_idx - f.start_idx + 1 >= 3
        assert np.ptp(x) == 0.0  # frozen at the last good value


# --------------------------------------------------------------------------- #
# realism of the normal behaviour
# --------------------------------------------------------------------------- #
def test_value_ranges_and_cycles(sim):
    v = sim.clean
    med = np.median(v, axis=(0, 2))
    assert 55 < med[0] < 70 and 1 < med[1] < 3 and 395 < med[2] < 405 and 40 < med[3] < 80
    assert np.percentile(v[:, 0], 99) < 80 and np.percentile(v[:, 1], 1) > 0.5
    ts = sim.timestamps
    hour, weekday = np.asarray(ts.hour), np.asarray(ts.day_of_week) < 5
    cur = v[:, 3].mean(axis=0)
    work, night = (hour >= 10) & (hour < 16), hour < 4
    assert cur[work & weekday].mean() > cur[night & weekday].mean() + 10  # daily cycle
    assert cur[work & ~weekday].mean() < cur[work & weekday].mean() - 3  # weekends lower
    # temperature and current follow the load
    corr = [np.corrcoef(v[i, 0], v[i, 3])[0, 1] for i in range(0, 200, 10)]
    assert min(corr) > 0.6


@pytest.mark.parametrize(("freq", "ppd"), [("1min", 1440), ("5min", 288), ("15min", 96), ("1h", 24), ("1D", 1)])
def test_frequencies(tmp_path, freq, ppd):
    s = generate_fleet(tmp_path / "landing", entities=25, days=16, freq=freq, seed=3)
    assert s.periods == 16 * ppd
    assert s.rows == 25 * 4 * 16 * ppd
    assert s.sites == 2 and s.files == 16 * 2
    site2 = pd.read_csv(tmp_path / "landing" / "2026-09-10" / "site-02.csv")
    assert len(site2) == 5 * ppd
    ts = pd.to_datetime(site2.timestamp.iloc[:ppd], utc=True)
    assert ts.iloc[0] == pd.Timestamp("2026-09-10", tz="UTC")
    if ppd > 1:
        assert (ts.diff().dropna() == pd.Timedelta(days=1) / ppd).all()
    labels = pd.read_csv(s.labels_path)
    assert len(labels) >= 4
    assert (pd.to_datetime(labels.start) >= START + pd.Timedelta(days=HISTORY_DAYS)).all()
    assert (pd.to_datetime(labels.end) <= s.last_timestamp).all()


def test_daily_cycle_scales_with_freq_and_vanishes_for_daily_data():
    q = simulate_fleet(entities=20, days=15, freq="15min", seed=1).values[:, 3]
    hour = np.arange(q.shape[1]) * 0.25 % 24
    assert q[:, (hour >= 10) & (hour < 16)].mean() > q[:, hour < 4].mean() + 10
    d = simulate_fleet(entities=20, days=15, freq="1D", seed=1)
    assert d.values.shape == (20, 4, 15)
    # daily values sit between the night and the working-hours level
    assert q[:, hour < 4].mean() < d.values[:, 3].mean() < q[:, (hour >= 10) & (hour < 16)].mean()


def test_custom_paths(tmp_path):
    s = generate_fleet(
        tmp_path / "in" / "landing",
        entities=30,
        days=15,
        labels_path=tmp_path / "truth" / "my_labels.csv",
        entities_path=tmp_path / "meta" / "ents.csv",
    )
    assert s.labels_path.is_file() and s.entities_path.is_file()
    assert s.faults_path == tmp_path / "truth" / "faults.csv" and s.faults_path.is_file()
    assert s.sites == 2 and s.faulty_entities == round(0.15 * 30)
    assert not (tmp_path / "in" / "labels.csv").exists()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"days": 14},
        {"entities": 0},
        {"freq": "7min"},
        {"freq": "bogus"},
        {"start": "2026-09-07T05:00"},
    ],
)
def test_invalid_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        generate_fleet(tmp_path / "landing", **kwargs)


def test_fixed3_matches_printf():
    rng = np.random.default_rng(0)
    x = np.round(
        np.concatenate(
            [rng.normal(60, 5, 5000), rng.uniform(-500, 500, 5000), [0.0, -0.0, 0.001, -0.001, 9.9995, 12345.678]]
        ),
        3,
    )
    got = np.array([row[row != 0].tobytes().decode() for row in _fixed3(x)])
    ref = np.char.mod("%.3f", x)
    ref[ref == "-0.000"] = "0.000"
    assert (got == ref).all()
