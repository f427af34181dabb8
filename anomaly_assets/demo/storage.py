"""Self-storage facilities, daily: rent collections by payment channel, move-ins, delinquency.

The feed is a property-management system's nightly export: one long CSV a day for every
facility, ``landing/<YYYY-MM-DD>/facilities.csv``::

    entity_id,metric,timestamp,value
    fac-001,revenue_usd,2024-07-01T00:00:00Z,21904.17

Signal model (per facility; see ``docs/demo.md`` for the reasoning):

* occupied units = units x occupancy (summer high, slow drift); rent grows with a per-facility
  trend; a month's collections = rent roll x (1 - delinquent share);
* collections arrive by **card** (autopay charges on the 1st, manual payments concentrated on the
  1st-5th, a bump mid-month, fewer at weekends and on holidays), **ACH** (autopay drafts on the
  1st plus manual ones, settled on bank business days only: weekend and holiday amounts post on
  the next business day) and **cash/check** at the office (closed Sundays and holidays);
  each day's amount is a sum of a Poisson number of payments of varying size (a gamma sum);
* ``revenue_usd`` = card + ACH + cash/check collected that day;
* ``move_ins``: negative-binomial counts, peak in summer, month-end bump, weekends and holidays
  lower;
* ``delinquency_rate``: delinquent / occupied units, a slowly moving ratio that jumps after the
  grace period (the 6th) and cures through the month.

Faults (after the reference period), each one window per facility:

======================  ===========================================================  ============================
kind                    effect                                                       labeled metrics
======================  ===========================================================  ============================
card_outage             card collections at 0-4 % for 1-3 days, at one facility or   card_payments_usd;revenue_usd
                        at every facility of one card processor; ACH holds
delinquency_spike       delinquency +35-70 % of its level for 5-28 days (ramps in    delinquency_rate
                        and out over up to 3 days)
duplicate_settlement    one day's card settlement posted twice                       card_payments_usd;revenue_usd
missing_settlement      one day's card settlement missing, caught up the next day    card_payments_usd;revenue_usd
======================  ===========================================================  ============================
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from anomaly_assets.demo.calendar import CalendarEvent, business_days, holiday_matrix, public_holidays, settle
from anomaly_assets.demo.dataset import DemoData, Fault, changed_window

__all__ = ["DEFAULT_DAYS", "DEFAULT_FACILITIES", "FAULT_KINDS", "METRICS", "REFERENCE_DAYS", "simulate"]

METRICS: tuple[str, ...] = ("revenue_usd", "card_payments_usd", "ach_payments_usd", "move_ins", "delinquency_rate")
DECIMALS = (2, 2, 2, 0, 4)
REV, CARD, ACH, MOVE, DELQ = range(5)
FAULT_KINDS: tuple[str, ...] = ("card_outage", "delinquency_spike", "duplicate_settlement", "missing_settlement")
DEFAULT_FACILITIES = 40
DEFAULT_DAYS = 730
DEFAULT_START = "2024-07-01"
REFERENCE_DAYS = 84  # fault-free reference: the first 12 weeks
_GAP = 7  # days kept between two faults of one facility

# (site = market, region, country, relative weight)
MARKETS = (
    ("houston", "US-TX", "US", 1.0), ("dallas", "US-TX", "US", 1.0), ("austin", "US-TX", "US", 0.8),
    ("phoenix", "US-AZ", "US", 1.0), ("atlanta", "US-GA", "US", 1.0), ("tampa", "US-FL", "US", 0.9),
    ("orlando", "US-FL", "US", 0.9), ("charlotte", "US-NC", "US", 0.8), ("denver", "US-CO", "US", 0.8),
    ("toronto", "CA-ON", "CA", 1.0), ("ottawa", "CA-ON", "CA", 0.7),
    ("london", "GB-ENG", "GB", 0.9), ("manchester", "GB-ENG", "GB", 0.6),
)
_RENT = {"US": 125.0, "CA": 115.0, "GB": 150.0}  # USD per unit and month
FORMATS = ("drive-up", "climate-controlled", "mixed")
_FORMAT_RENT = (0.9, 1.2, 1.0)
PROCESSORS = ("A", "B", "C")
_PROCESSOR_P = (0.55, 0.3, 0.15)


def _ar1(rng: np.random.Generator, n: int, t: int, sigma, tau_days: float) -> np.ndarray:
    """Stationary AR(1), shape (n, t), marginal std ``sigma``, correlation time ``tau_days``."""
    phi = math.exp(-1.0 / tau_days)
    eps = rng.standard_normal((n, t))
    eps[:, 1:] *= math.sqrt(1.0 - phi * phi)
    return lfilter([1.0], [1.0, -phi], eps, axis=1) * np.asarray(sigma, dtype=float).reshape(-1, 1)


def _manual_profile(dom: np.ndarray, dim: np.ndarray) -> np.ndarray:
    """Share of a month's manual payments made on each day of the month (sums to 1 per month).

    Most pay on the 1st-5th (rent is due on the 1st), some after the grace period ends (late fee
    on the 6th), a bump mid-month (semi-monthly paydays), a floor the rest of the month.
    """
    def w(d):
        return (0.35 + 3.0 * np.exp(-(d - 1) / 2.5) + 0.9 * np.exp(-(((d - 15) / 1.8) ** 2))
                + 0.6 * np.exp(-(((d - 6) / 1.2) ** 2)))

    norm = {m: w(np.arange(1, m + 1, dtype=float)).sum() for m in (28, 29, 30, 31)}
    return w(dom.astype(float)) / np.vectorize(norm.get)(dim)


def _payments(rng: np.random.Generator, expected: np.ndarray, size: np.ndarray, cv: float = 0.55) -> np.ndarray:
    """A day's total of a Poisson number of payments with gamma-distributed amounts (USD)."""
    k = rng.poisson(np.maximum(expected, 0.0) / size)
    return rng.gamma(k / cv**2) * (size * cv**2)


def simulate(
    *, entities: int = DEFAULT_FACILITIES, days: int = DEFAULT_DAYS, start: str = DEFAULT_START, seed: int = 7
) -> DemoData:
    """Simulate the facilities with and without faults (no I/O); see the module docstring.

    Parameters
    ----------
    entities : int
        Number of facilities (``fac-001`` ...).
    days : int
        Length of the period; at least ``REFERENCE_DAYS + 28``.
    start : str
        First day (a date).
    seed : int
        The result is a pure function of all arguments.

    Returns
    -------
    DemoData
    """
    if entities < 1:
        raise ValueError(f"entities must be >= 1, got {entities}")
    if days < REFERENCE_DAYS + 28:
        raise ValueError(f"days must be >= {REFERENCE_DAYS + 28} (a {REFERENCE_DAYS}-day reference, then faults), got {days}")
    n, t = int(entities), int(days)
    dates = pd.date_range(pd.Timestamp(start).normalize(), periods=t, freq="D", tz="UTC").as_unit("s")
    rng_ent, rng_noise, rng_fault = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))

    # ---- facilities ---------------------------------------------------------------------------
    weights = np.array([m[3] for m in MARKETS])
    market = rng_ent.choice(len(MARKETS), size=n, p=weights / weights.sum())
    country = np.array([MARKETS[k][2] for k in market])
    fmt = rng_ent.choice(len(FORMATS), size=n, p=(0.35, 0.35, 0.3))
    processor = rng_ent.choice(len(PROCESSORS), size=n, p=_PROCESSOR_P)
    urban = rng_ent.random(n) < 0.4
    units = rng_ent.integers(350, 950, size=n)
    rent = np.array([_RENT[c] for c in country]) * np.asarray(_FORMAT_RENT)[fmt] * rng_ent.lognormal(0.0, 0.15, n)
    occ0 = rng_ent.uniform(0.80, 0.93, n)
    occ_amp = rng_ent.uniform(0.015, 0.035, n)
    growth = rng_ent.normal(0.035, 0.03, n)  # rent roll per year
    move_growth = rng_ent.normal(0.02, 0.04, n)
    turnover = rng_ent.uniform(0.04, 0.065, n)  # move-ins per occupied unit and month
    d_base = rng_ent.uniform(0.04, 0.10, n)
    card_share = rng_ent.uniform(0.55, 0.70, n)
    ach_share = rng_ent.uniform(0.18, 0.30, n)
    card_auto = rng_ent.uniform(0.25, 0.45, n)
    anniversary = rng_ent.uniform(0.1, 0.4, n)  # share of tenants billed on their move-in day
    ach_auto = rng_ent.uniform(0.60, 0.85, n)
    ids = np.array([f"fac-{i + 1:0{max(3, len(str(n)))}d}" for i in range(n)])
    entities_frame = pd.DataFrame({
        "entity_id": ids,
        "site": [MARKETS[k][0] for k in market],
        "model": np.asarray(FORMATS)[fmt],
        "tags": [f"processor-{PROCESSORS[p].lower()};{'urban' if u else 'suburban'}" for p, u in zip(processor, urban)],
        "country": country,
        "region": [MARKETS[k][1] for k in market],
        "processor": np.asarray(PROCESSORS)[processor],
        "units": units,
    })

    # ---- calendar -----------------------------------------------------------------------------
    def col(a) -> np.ndarray:  # (n,) -> (n, 1), broadcasts over days
        return np.asarray(a, dtype=float)[:, None]

    doy = np.asarray(dates.day_of_year, dtype=float)
    dom = np.asarray(dates.day)
    dim = np.asarray(dates.days_in_month)
    dow = np.asarray(dates.day_of_week)
    years = np.arange(t) / 365.25
    holiday = holiday_matrix(country, dates)
    bank_open = business_days(holiday, dates)  # ACH settles Monday-Friday except holidays
    office_open = business_days(holiday, dates, closed_weekdays=(6,))

    # ---- occupancy, rent roll, delinquency --------------------------------------------------
    season = np.cos(2 * np.pi * (doy - 200.0) / 365.25)  # +1 in mid-July
    occ = col(occ0) + col(occ_amp) * season + _ar1(rng_noise, n, t, 0.01, 60.0)
    occ_units = np.rint(col(units) * np.clip(occ, 0.5, 0.99))
    rent_t = col(rent) * np.exp(col(growth) * years)
    d_level = col(d_base) * (1.0 + 0.1 * np.cos(2 * np.pi * (doy - 20.0) / 365.25)) * np.exp(
        _ar1(rng_noise, n, t, 0.12, 45.0))
    month_shape = np.where(dom < 6, 0.85, 0.9 + 0.35 * np.exp(-(dom - 6) / 6.0))
    d_rate = d_level * month_shape * np.exp(_ar1(rng_noise, n, t, 0.04, 3.0))
    collections = occ_units * rent_t * (1.0 - d_level) * 1.03  # a month's worth; +3 % fees

    # ---- move-ins (they pay their first month by card, a few in cash) -----------------------
    lam = occ_units * col(turnover) / 30.4 * np.exp(col(move_growth) * years)
    lam = lam * (1.0 + 0.4 * np.cos(2 * np.pi * (doy - 190.0) / 365.25))
    lam = lam * np.where(dow == 5, 0.8, np.where(dow == 6, 0.35, 1.0)) * np.where(holiday, 0.2, 1.0)
    lam = lam * np.where(dom >= dim - 2, 1.4, np.where(dom == 1, 1.25, 1.0))
    move_ins = rng_noise.poisson(lam * rng_noise.gamma(4.0, 0.25, (n, t))).astype(float)
    move_in_pay = move_ins * rent_t * 1.6 * rng_noise.lognormal(0.0, 0.2, (n, t))  # prorated rent, fee, lock

    # ---- payments -----------------------------------------------------------------------------
    # first-of-month billing: autopay on the 1st, manual payments by the profile; anniversary
    # billing (a share per facility): the same flows spread evenly over the month
    weekday = np.where(dow == 5, 0.8, np.where(dow == 6, 0.6, 1.0))
    manual = (col(1 - anniversary) * _manual_profile(dom, dim)[None, :] + col(anniversary) / dim[None, :])
    manual = manual * weekday[None, :] * np.where(holiday, 0.7, 1.0)
    auto = col(1 - anniversary) * (dom == 1)[None, :] + col(anniversary) / dim[None, :]
    size = rent_t * 1.15  # an average payment: some pay several months, fees
    card_exp = collections * col(card_share)
    card = card_exp * col(card_auto) * auto * (1.0 + rng_noise.normal(0.0, 0.02, (n, t)))
    card += _payments(rng_noise, card_exp * col(1 - card_auto) * manual, size) + 0.85 * move_in_pay
    ach_exp = collections * col(ach_share)
    ach = ach_exp * col(ach_auto) * auto * (1.0 + rng_noise.normal(0.0, 0.02, (n, t)))
    ach += _payments(rng_noise, ach_exp * col(1 - ach_auto) * manual, size)
    other = _payments(rng_noise, collections * col(1 - card_share - ach_share) * manual, size)
    other += 0.15 * move_in_pay
    cents = {
        "card": np.rint(card * 100).astype(np.int64),
        "ach": settle(np.rint(ach * 100).astype(np.int64), bank_open),
        "other": settle(np.rint(other * 100).astype(np.int64), office_open),
    }

    values = np.empty((n, len(METRICS), t))
    values[:, MOVE] = move_ins
    _fill(values, cents["card"], cents, d_rate, occ_units)
    clean = values.copy()

    faults = _inject(rng_fault, values, clean, cents, d_rate, d_base, occ_units, processor, t)
    calendar = tuple(
        CalendarEvent(d, d, "bank_holiday", f"country:{c}", name)
        for c in sorted(set(country)) for d, name in public_holidays(c, dates).items()
    )
    return DemoData(
        kind="storage", entities=entities_frame, dates=dates, metrics=METRICS, decimals=DECIMALS,
        values=values, clean=clean, faults=faults, calendar=calendar, reference_days=REFERENCE_DAYS,
        file_keys=np.full(n, "facilities"), layout="long", fault_kinds=FAULT_KINDS, seed=seed,
    )


def _fill(values: np.ndarray, card: np.ndarray, cents: dict, d_rate: np.ndarray, occ_units: np.ndarray,
          rows: np.ndarray | slice = slice(None)) -> None:
    """Write the money and delinquency metrics from integer cents and delinquent counts."""
    values[rows, CARD] = card[rows] / 100
    values[rows, ACH] = cents["ach"][rows] / 100
    values[rows, REV] = (card[rows] + cents["ach"][rows] + cents["other"][rows]) / 100
    delinquent = np.rint(occ_units[rows] * d_rate[rows])
    values[rows, DELQ] = np.round(delinquent / occ_units[rows], 4)


def _counts(n: int, t: int) -> dict[str, int]:
    """Incidents per kind, scaled from 3-4 each for 40 facilities over 730 days."""
    scale = n / DEFAULT_FACILITIES * (t - REFERENCE_DAYS) / (DEFAULT_DAYS - REFERENCE_DAYS)
    return {k: max(1, round(c * scale)) for k, c in zip(FAULT_KINDS, (3, 4, 4, 3), strict=True)}


def _inject(rng: np.random.Generator, values: np.ndarray, clean: np.ndarray, cents: dict, d_rate: np.ndarray, d_base: np.ndarray,
            occ_units: np.ndarray, processor: np.ndarray, t: int) -> tuple[Fault, ...]:
    """Inject the faults into ``values`` in place; return their windows as the data shows them."""
    n = values.shape[0]
    card = cents["card"].copy()
    rate = d_rate.copy()
    busy: list[list[tuple[int, int, str]]] = [[] for _ in range(n)]

    def place(i: int, length: int, kind: str) -> int | None:
        if any(k == kind for _, _, k in busy[i]):
            return None  # one incident of a kind per facility: incidents stay distinct
        for _ in range(50):
            s = int(rng.integers(REFERENCE_DAYS, t - length + 1))
            e = s + length - 1
            if all(e + _GAP < a or s > b + _GAP for a, b, _ in busy[i]):
                busy[i].append((s, e, kind))
                return s
        return None

    def outage(i: int, s: int, length: int) -> None:
        card[i, s : s + length] = np.rint(card[i, s : s + length] * rng.uniform(0.0, 0.04, length))

    # a processor-wide outage: every facility of one processor that is not the whole fleet
    sizes = np.bincount(processor, minlength=len(PROCESSORS))
    eligible = [p for p in range(len(PROCESSORS)) if 2 <= sizes[p] < n]
    if eligible and t - REFERENCE_DAYS >= 60:
        p = eligible[int(rng.integers(len(eligible)))]
        length = int(rng.integers(1, 4))
        s = int(rng.integers(REFERENCE_DAYS, t - length + 1))
        for i in np.flatnonzero(processor == p):
            busy[i].append((s, s + length - 1, "card_outage"))
            outage(i, s, length)
    for kind, count in _counts(n, t).items():
        for i in rng.choice(n, size=min(count, n), replace=False):
            if kind == "card_outage":
                length = int(rng.integers(1, 4))
                if (s := place(i, length, kind)) is not None:
                    outage(i, s, length)
            elif kind == "delinquency_spike":
                length = int(rng.integers(5, 29))
                if (s := place(i, length, kind)) is not None:
                    ramp = min(3, length // 3)
                    shape = np.ones(length)
                    shape[:ramp] = np.arange(1, ramp + 1) / (ramp + 1)
                    shape[length - ramp :] = shape[:ramp][::-1]
                    rate[i, s : s + length] += rng.uniform(0.35, 0.70) * d_base[i] * shape
            elif kind == "duplicate_settlement":
                if (s := place(i, 1, kind)) is not None:
                    card[i, s] *= 2
            elif (s := place(i, 2, kind)) is not None:  # missing_settlement
                card[i, s + 1] += card[i, s]
                card[i, s] = 0

    rows = np.flatnonzero([bool(b) for b in busy])
    _fill(values, card, cents, rate, occ_units, rows)
    faults = []
    for i in rows:
        for s, e, kind in sorted(busy[i]):
            f = changed_window(clean[i], values[i], METRICS, i, kind, lo=s, hi=e)
            if f is not None:
                faults.append(f)
    return tuple(faults)

