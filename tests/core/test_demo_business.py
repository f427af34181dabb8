"""The business demo kinds (anomaly_assets.demo: storage, retail) and the one entry point.

Default sizes throughout (40 facilities x 730 days, 300 store-SKUs x 365 days): the faults and
calendar effects asserted here are what the evaluation harness gets.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anomaly_assets.alert_config import load_entities
from anomaly_assets.demo import KINDS, generate, simulate
from anomaly_assets.demo.calendar import public_holidays, settle, thanksgiving
from anomaly_assets.demo.fleet import generate_fleet
from anomaly_assets.landing import discover_files, read_batch, read_file, read_labels

BUSINESS = ("storage", "retail")
FILES = ("labels.csv", "faults.csv", "entities.csv", "splits.csv", "calendar.csv")


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict:
    """Each business kind generated at its default size: (summary, data in memory, seconds)."""
    out = {}
    for kind in BUSINESS:
        root = tmp_path_factory.mktemp(kind)
        t0 = time.perf_counter()
        s = generate(kind, root)
        out[kind] = (s, simulate(kind), time.perf_counter() - t0)
    return out


@pytest.fixture(scope="module")
def storage(written):
    return written["storage"][1]


@pytest.fixture(scope="module")
def retail(written):
    return written["retail"][1]


def _metric(data, name: str, which: str = "values") -> np.ndarray:
    return getattr(data, which)[:, data.metrics.index(name)]


# --------------------------------------------------------------------------------------------
# files: layout, readability, determinism
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", BUSINESS)
def test_files_and_summary(written, kind):
    s, data, seconds = written[kind]
    assert seconds < 15.0  # a few seconds on any machine
    root = s.out_dir
    assert sorted(p.name for p in root.iterdir()) == sorted([*FILES, "landing"])
    days = sorted(p.name for p in s.landing_dir.iterdir())
    assert days == list(data.dates.strftime("%Y-%m-%d"))
    assert not list(s.landing_dir.rglob(".*")), "temporary files left behind"
    per_day = {"storage": ["facilities.csv"], "retail": [f"S{k:02d}.csv" for k in range(1, 13)]}[kind]
    assert sorted(p.name for p in (s.landing_dir / days[100]).iterdir()) == per_day
    assert s.files == len(days) * len(per_day)
    n, m, t = data.values.shape
    assert (s.entities, s.periods, s.rows) == (n, t, n * m * t)
    assert {"storage": (40, 730), "retail": (300, 365)}[kind] == (n, t)
    assert all(c > 0 for c in s.faults_by_kind.values()), s.faults_by_kind


@pytest.mark.parametrize("kind", BUSINESS)
def test_landing_reads_back_exactly(written, kind):
    """Every file is read by the project's reader with nothing rejected, and holds the simulation."""
    s, data, _ = written[kind]
    files = discover_files(s.landing_dir)
    batch = read_batch(files, root=s.landing_dir)
    assert not any(batch.file_errors) and len(batch.rej_line) == 0
    assert set(batch.shapes) == {"long" if kind == "storage" else "wide"}
    assert len(batch.value) == s.rows
    # the values, by entity, metric and day, are the simulated ones
    ent = {e: i for i, e in enumerate(data.entity_ids)}
    e_idx = np.array([ent.get(e, -1) for e in batch.entity_names])[batch.entity]
    m_idx = np.array([data.metrics.index(x) if x in data.metrics else -1 for x in batch.metric_names])[batch.metric]
    assert (e_idx >= 0).all() and (m_idx >= 0).all()
    day0 = int(data.dates[0].value // 1000)
    t_idx = (batch.ts - day0) // 86_400_000_000
    got = np.full(data.values.shape, np.nan)
    got[e_idx, m_idx, t_idx] = batch.value
    np.testing.assert_allclose(got, data.values, rtol=0, atol=1e-9)
    # read_file (one file at a time, what the sensor does) agrees on a few files
    for f in (files[0], files[len(files) // 2], files[-1]):
        fr = read_file(f, root=s.landing_dir)
        assert fr.file_error is None and len(fr.rejected_rows) == 0 and len(fr.observations) > 0


@pytest.mark.parametrize("kind", BUSINESS)
def test_same_seed_same_bytes_other_seed_differs(written, kind, tmp_path):
    s, _, _ = written[kind]
    generate(kind, tmp_path / "a")
    a, b = _all_files(s.out_dir), _all_files(tmp_path / "a")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    generate(kind, tmp_path / "b", seed=8)
    c = _all_files(tmp_path / "b")
    assert c["labels.csv"] != a["labels.csv"]
    day = next(k for k in a if k.startswith("landing/"))
    assert c[day] != a[day]


def test_generate_replaces_the_landing_folder(tmp_path):
    generate("storage", tmp_path, entities=4, days=140)
    generate("storage", tmp_path, entities=4, days=120)
    assert len(list((tmp_path / "landing").iterdir())) == 120  # no day left over from the longer run


@pytest.mark.parametrize("kind", BUSINESS)
def test_entities_file_is_what_the_alerts_read(written, kind):
    s, data, _ = written[kind]
    ent = pd.read_csv(s.entities_path, dtype=str, keep_default_na=False)
    assert list(ent.columns[:6]) == ["entity_id", "site", "model", "tags", "country", "region"]
    assert ent.entity_id.is_unique and (ent.entity_id.to_numpy() == data.entity_ids).all()
    assert set(ent.country) <= {"US", "CA", "GB"} and len(set(ent.country)) >= 2
    assert (ent.region.str[:2] == ent.country).all()
    register = load_entities(s.entities_path)
    first = register.entities[ent.entity_id.iloc[0]]
    assert first.site == ent.site.iloc[0] and first.tags == ent.tags.iloc[0].split(";")
    if kind == "retail":
        assert ent.entity_id.str.match(r"^S\d{2}-SKU\d{4}$").all()
        price = ent.price_usd.astype(float)
        assert (price > 0).all() and ent.groupby("sku").price_usd.nunique().eq(1).all()  # a price per SKU
        assert ent.groupby("site").size().eq(25).all()
    else:
        assert ent.tags.str.match(r"^processor-[abc];(urban|suburban)$").all()


# --------------------------------------------------------------------------------------------
# labels, faults, splits
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", BUSINESS)
def test_labels_are_exactly_the_changed_points(written, kind):
    s, data, _ = written[kind]
    changed = data.values != data.clean
    mask = data.label_mask()
    assert changed.any()
    assert not (changed & ~mask).any(), "a changed point outside every label window"
    for f in data.faults:
        window = changed[f.entity_idx, :, f.start_idx : f.end_idx + 1]
        touched = {data.metrics[j] for j in np.flatnonzero(window.any(axis=1))}
        assert touched == set(f.metrics), f
        assert window[:, 0].any() and window[:, -1].any(), f"window not tight: {f}"
    labels = read_labels(s.labels_path)  # the project's reader accepts them
    assert len(labels) == len(data.faults)
    faults = pd.read_csv(s.faults_path, dtype=str)
    pd.testing.assert_frame_equal(faults, data.faults_frame().astype(str))
    pd.testing.assert_frame_equal(pd.read_csv(s.labels_path, dtype=str), faults.drop(columns="fault_kind"))
    assert set(faults.fault_kind) == set(data.fault_kinds)
    assert dict(faults.fault_kind.value_counts()) == {k: v for k, v in s.faults_by_kind.items() if v}


@pytest.mark.parametrize("kind", BUSINESS)
def test_splits_keep_faults_out_of_the_reference(written, kind):
    s, data, _ = written[kind]
    splits = pd.read_csv(s.splits_path)
    assert list(splits.columns) == ["entity_id", "test_start"]
    assert (splits.entity_id.to_numpy() == data.entity_ids).all()
    test_start = pd.to_datetime(splits.test_start, utc=True)
    assert (test_start == data.dates[0] + pd.Timedelta(weeks=12)).all()
    assert (read_labels(s.labels_path).start >= test_start.iloc[0]).all()
    ref = data.reference_days
    np.testing.assert_array_equal(data.values[:, :, :ref], data.clean[:, :, :ref])


def test_one_incident_per_entity_and_kind(storage, retail):
    for data in (storage, retail):
        df = data.faults_frame()
        assert not df.duplicated(["entity_id", "fault_kind"]).any()  # the routing report merges by these
    assert not retail.faults_frame().entity_id.duplicated().any()


# --------------------------------------------------------------------------------------------
# storage: calendar effects and faults
# --------------------------------------------------------------------------------------------
def _holiday_mask(data) -> np.ndarray:
    out = np.zeros((len(data.entity_ids), len(data.dates)), dtype=bool)
    day = {d: j for j, d in enumerate(data.dates.date)}
    for c in data.entities.country.unique():
        cols = [day[d] for d in public_holidays(c, data.dates)]
        out[np.ix_(data.entities.country.to_numpy() == c, cols)] = True
    return out


def test_storage_ach_settles_on_business_days_only(storage):
    ach = _metric(storage, "ach_payments_usd", "clean")
    weekend = np.asarray(storage.dates.day_of_week) >= 5
    holiday = _holiday_mask(storage)
    assert (ach[:, weekend] == 0).all()
    assert (ach[holiday] == 0).all() and holiday.sum() > 40 * 10
    assert (ach[:, ~weekend] > 0).mean() > 0.6


def test_storage_calendar_file(written):
    s, data, _ = written["storage"]
    cal = pd.read_csv(s.calendar_path, keep_default_na=False)
    assert list(cal.columns) == ["start", "end", "kind", "scope", "name", "lift"]
    assert set(cal.kind) == {"bank_holiday"}
    assert set(cal.scope) == {f"country:{c}" for c in data.entities.country.unique()}
    us = cal[cal.scope == "country:US"]
    assert {"Thanksgiving Day", "Christmas Day", "Independence Day"} <= set(us.name)
    assert len(us) == len(public_holidays("US", data.dates))


def test_storage_rent_cycle_weekdays_and_holiday_shift(storage):
    dom = np.asarray(storage.dates.day)
    card = _metric(storage, "card_payments_usd", "clean")
    rev = _metric(storage, "revenue_usd", "clean")
    ach = _metric(storage, "ach_payments_usd", "clean")
    mid = (dom >= 8) & (dom <= 28) & (dom != 15)
    assert card[:, dom == 1].mean() > 6 * card[:, mid].mean()  # rent is due on the 1st
    assert rev[:, dom <= 5].mean() > 3 * rev[:, mid].mean()
    # a smaller mid-month bump (semi-monthly paydays): 14th-16th above the 10th-12th and 20th-22nd
    bump, around = np.isin(dom, (14, 15, 16)), np.isin(dom, (10, 11, 12, 20, 21, 22))
    assert 1.05 * card[:, around].mean() < card[:, bump].mean() < 3 * card[:, around].mean()
    # ACH of a weekend or holiday first settles on the next business day
    us = storage.entities.country.to_numpy() == "US"
    jan2 = storage.dates.get_loc(pd.Timestamp("2025-01-02", tz="UTC"))
    assert (ach[us, jan2 - 1] == 0).all() and (ach[us, jan2] > 5 * np.median(ach[us][:, mid], axis=1)).all()
    # Monday ACH carries the weekend's payments
    dow = np.asarray(storage.dates.day_of_week)
    assert ach[:, (dow == 0) & mid].mean() > 1.5 * ach[:, np.isin(dow, (2, 3)) & mid].mean()


def test_storage_move_ins_and_delinquency(storage):
    move = _metric(storage, "move_ins", "clean")
    assert (move == np.round(move)).all() and (move >= 0).all()
    assert (move == 0).mean() > 0.2  # small counts, often 0
    month = np.asarray(storage.dates.month)
    dow = np.asarray(storage.dates.day_of_week)
    assert move[:, np.isin(month, (6, 7, 8))].mean() > 1.4 * move[:, np.isin(month, (12, 1, 2))].mean()
    assert move[:, dow >= 5].mean() < 0.8 * move[:, dow < 5].mean()
    d = _metric(storage, "delinquency_rate", "clean")
    assert (d > 0.01).all() and (d < 0.3).all()
    assert np.median(np.abs(np.diff(d, axis=1))) < 0.004  # slowly moving
    dom = np.asarray(storage.dates.day)
    assert d[:, (dom >= 6) & (dom <= 9)].mean() > 1.15 * d[:, dom <= 5].mean()  # past due after the grace period


def _kind(data, kind):
    fs = [f for f in data.faults if f.fault_kind == kind]
    assert fs, kind
    return fs


def test_storage_faults(storage):
    card, card0 = _metric(storage, "card_payments_usd"), _metric(storage, "card_payments_usd", "clean")
    ach, ach0 = _metric(storage, "ach_payments_usd"), _metric(storage, "ach_payments_usd", "clean")
    np.testing.assert_array_equal(ach, ach0)  # no fault touches ACH
    outages = _kind(storage, "card_outage")
    for f in outages:
        w = slice(f.start_idx, f.end_idx + 1)
        assert f.end_idx - f.start_idx < 3
        assert (card[f.entity_idx, w] <= 0.05 * card0[f.entity_idx, w] + 0.01).all()
    # one outage hit every facility of one processor at once
    df = storage.faults_frame().merge(storage.entities[["entity_id", "processor"]])
    shared = df[df.fault_kind == "card_outage"].groupby(["start", "processor"]).entity_id.nunique()
    (_, proc), size = shared.idxmax(), shared.max()
    assert size >= 2 and size == (storage.entities.processor == proc).sum()
    for f in _kind(storage, "duplicate_settlement"):
        assert f.start_idx == f.end_idx
        assert card[f.entity_idx, f.start_idx] == pytest.approx(2 * card0[f.entity_idx, f.start_idx], abs=0.011)
    for f in _kind(storage, "missing_settlement"):
        i, a = f.entity_idx, f.start_idx
        assert f.end_idx == a + 1 and card[i, a] == 0
        assert card[i, a + 1] == pytest.approx(card0[i, a] + card0[i, a + 1], abs=0.011)
    d, d0 = _metric(storage, "delinquency_rate"), _metric(storage, "delinquency_rate", "clean")
    for f in _kind(storage, "delinquency_spike"):
        w = slice(f.start_idx, f.end_idx + 1)
        assert 3 <= f.end_idx - f.start_idx + 1 <= 28
        assert (d[f.entity_idx, w] >= d0[f.entity_idx, w]).all()
        rel = (d[f.entity_idx, w] / d0[f.entity_idx, w]).max() - 1
        assert 0.2 < rel < 1.0, rel  # visible, not absurd


# --------------------------------------------------------------------------------------------
# retail: calendar effects, inventory, faults
# --------------------------------------------------------------------------------------------
def test_retail_inventory_and_stockouts(retail):
    sold, oh = _metric(retail, "units_sold", "clean"), _metric(retail, "on_hand", "clean")
    assert (sold >= 0).all() and (oh >= 0).all() and (sold == np.round(sold)).all()
    delivered = oh[:, 1:] - oh[:, :-1] + sold[:, 1:]
    assert (delivered >= 0).all()  # stock only leaves by sales
    deliveries = (delivered > 0).sum(axis=1) / (len(retail.dates) / 7)
    assert 0.4 < np.median(deliveries) <= 1.05  # weekly or fortnightly
    out = (oh[:, :-1] == 0) & (oh[:, 1:] == 0)  # a day that starts and ends empty
    assert 0.002 < out.mean() < 0.08  # stockouts happen, not constantly
    assert (sold[:, 1:][out] == 0).all()
    labeled = retail.label_mask()[:, 0, 1:]
    assert (out & ~labeled).sum() > 100  # natural stockouts, not labeled
    rates = sold.mean(axis=1)
    assert rates.min() < 0.3 and rates.max() > 10  # slow to fast movers


def test_retail_weekly_cycle_holidays_and_peaks(written, retail):
    s = written["retail"][0]
    sold = _metric(retail, "units_sold", "clean")
    total = sold.sum(axis=0)
    dow = np.asarray(retail.dates.day_of_week)
    assert total[dow == 5].mean() > 1.4 * total[dow == 1].mean()  # Saturday vs Tuesday
    cal = pd.read_csv(s.calendar_path, keep_default_na=False)
    assert {"closed", "peak", "holiday", "promotion"} <= set(cal.kind)
    country = retail.entities.country.to_numpy()
    for r in cal[cal.kind == "closed"].itertuples():
        j = retail.dates.get_loc(pd.Timestamp(r.start, tz="UTC"))
        assert (sold[country == r.scope.split(":")[1], j] == 0).all(), r
    assert "Christmas Day" in set(cal[cal.kind == "closed"].name)
    bf = retail.dates.get_loc(pd.Timestamp(thanksgiving(2025) + dt.timedelta(days=1), tz="UTC"))
    fridays = [bf - 7 * k for k in (2, 3, 4, 5)]
    assert total[bf] > 1.5 * total[fridays].mean()  # demand x2.2, sales capped by the stock


def test_retail_promotions_lift_sales(written, retail):
    s = written["retail"][0]
    cal = pd.read_csv(s.calendar_path, keep_default_na=False)
    promos = cal[(cal.kind == "promotion") & cal.scope.str.startswith("sku:")]
    assert len(promos) >= 25
    sold = _metric(retail, "units_sold", "clean")
    sku = retail.entities.sku.to_numpy()
    day = {d.isoformat(): j for j, d in enumerate(retail.dates.date)}
    ratios = []
    for r in promos.itertuples():
        a, b = day[r.start], day[r.end]
        if a < 35:
            continue
        rows = sku == r.scope.split(":")[1]
        during = sold[rows, a : b + 1].sum(axis=0).mean()
        before = sold[rows, a - 35 : a - 7].sum(axis=0).mean()  # four weeks, a week before
        if before > 0:
            ratios.append(during / before)
    assert np.median(ratios) > 1.3


def test_retail_truth_is_the_demand_sales_are_drawn_from(retail):
    """``truth`` (the oracle of benchmarks/business_ceiling.py): mean and dispersion of the days'
    demand, read back from the clean sales on days the shelf could not run out."""
    mean, k, events = (retail.truth[n] for n in ("mean", "dispersion", "events"))
    n, t_len = len(retail.entity_ids), len(retail.dates)
    assert mean.shape == events.shape == (n, t_len) and k.shape == (n,)
    sold, oh = _metric(retail, "units_sold", "clean"), _metric(retail, "on_hand", "clean")
    stocked = (oh > 0) & (mean > 0) & ~events  # stock left at the day's end: sales = demand
    assert stocked.mean() > 0.5
    m, s = mean[stocked], sold[stocked]
    assert s.sum() / m.sum() == pytest.approx(1.0, abs=0.03)
    # negative binomial: var = m + m^2 / k; pooled over store-SKUs, the excess over Poisson is m^2 / k,
    # among the SKUs of low and of high dispersion apart (k is each SKU's own)
    kk = np.broadcast_to(k[:, None], mean.shape)[stocked]
    for group in (kk < 4.0, kk > 6.0):
        excess = ((s - m) ** 2 - m)[group].sum() / (m[group] ** 2 / kk[group]).sum()
        assert excess == pytest.approx(1.0, abs=0.15)
    assert events.any(axis=1).mean() > 0.5  # promotions and peaks touch most SKUs
    assert (mean[~events] > 0).all()


def test_retail_faults(retail):
    sold, sold0 = _metric(retail, "units_sold"), _metric(retail, "units_sold", "clean")
    oh = _metric(retail, "on_hand")
    for f in _kind(retail, "ghost_stock"):
        i, a = f.entity_idx, f.start_idx
        run = 0
        while a + run <= f.end_idx and sold[i, a + run] == 0 and oh[i, a + run] == oh[i, a - 1]:
            run += 1
        assert run >= 3 and oh[i, a - 1] > 0, f  # frozen on-hand, nothing sold, for days
        assert sold0[i, a : a + run].sum() > 0  # while it would have sold
    for f in _kind(retail, "unplanned_spike"):
        i, a = f.entity_idx, f.start_idx
        assert sold[i, a : a + 2].sum() > 1.3 * sold0[i, a : a + 2].sum()
    for f in _kind(retail, "sales_drop"):
        i, a = f.entity_idx, f.start_idx
        assert sold[i, a : a + 5].sum() <= 0.6 * sold0[i, a : a + 5].sum()


# --------------------------------------------------------------------------------------------
# the entry point, industrial through it, the shell
# --------------------------------------------------------------------------------------------
def test_industrial_through_generate_matches_the_fleet(tmp_path):
    s = generate("industrial", tmp_path / "k", entities=25, days=16, seed=3)
    generate_fleet(tmp_path / "f" / "landing", entities=25, days=16, seed=3)
    a, b = _all_files(tmp_path / "k"), _all_files(tmp_path / "f")
    for name in [k for k in b if k != "entities.csv"]:
        assert a[name] == b[name], name
    ent = pd.read_csv(s.entities_path)
    old = pd.read_csv(tmp_path / "f" / "entities.csv")
    pd.testing.assert_frame_equal(ent[list(old.columns)], old)
    assert list(ent.columns) == [*old.columns, "country", "region"]
    splits = pd.read_csv(s.splits_path)
    assert (pd.to_datetime(splits.test_start, utc=True) == pd.Timestamp("2026-09-21", tz="UTC")).all()
    assert (read_labels(s.labels_path).start >= pd.Timestamp("2026-09-21", tz="UTC")).all()
    assert s.calendar_path is None and "calendar.csv" not in a


@pytest.mark.parametrize(
    ("kind", "size", "message"),
    [
        ("retail", {"freq": "1h"}, "takes no freq"),
        ("storage", {"stores": 3}, "takes no stores"),
        ("storage", {"days": 100}, "days must be >="),
        ("retail", {"entities": 0}, "entities must be >= 1"),
        ("bakery", {}, "unknown demo kind"),
    ],
)
def test_bad_arguments_name_the_problem(tmp_path, kind, size, message):
    with pytest.raises(ValueError, match=message):
        generate(kind, tmp_path, **size)


def test_retail_entities_size(tmp_path):
    s = generate("retail", tmp_path, entities=50, days=130)
    assert s.entities == 50 and s.sites == 2
    assert simulate("retail", stores=1, skus=7, days=130).values.shape == (7, 2, 130)


def test_python_dash_m(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "anomaly_assets.demo", "--kind", "storage", "--out", str(tmp_path), "--entities", "5",
         "--days", "130", "--seed", "2"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "storage: 5 entities x 5 metrics, 130 periods" in r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*FILES, "landing"])
    bad = subprocess.run([sys.executable, "-m", "anomaly_assets.demo", "--kind", "retail", "--out", str(tmp_path),
                          "--freq", "1h"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "takes no freq" in bad.stderr
    assert set(KINDS) == {"industrial", "storage", "retail"}


def test_settle_moves_closed_days_forward():
    amounts = np.array([[1, 2, 3, 4, 5]])
    open_days = np.array([[True, False, False, True, False]])
    np.testing.assert_array_equal(settle(amounts, open_days), [[1, 0, 0, 9, 0]])  # the last one settles later
