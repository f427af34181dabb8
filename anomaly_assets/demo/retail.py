"""Retail stores x SKUs, daily: units sold and units on hand, with replenishment and promotions.

The feed is each store's point-of-sale and inventory export: one wide CSV per store per day,
``landing/<YYYY-MM-DD>/<store>.csv``::

    entity_id,timestamp,units_sold,on_hand
    S03-SKU0042,2025-07-01T00:00:00Z,4,37

Signal model (per store-SKU; see ``docs/demo.md``):

* demand = SKU popularity (slow to fast movers) x store size x weekday profile (Saturday high,
  Tuesday low) x the SKU category's yearly season x trend x calendar lifts (promotions, Black
  Friday, Boxing Day, Christmas Eve, other public holidays) and 0 on the days the store is closed;
  a day's demand is negative-binomial around it;
* inventory: a periodic review (weekly, every two weeks for slow movers, on the store's order day)
  orders up to the forecast demand of the next review period plus the lead time (2-4 days), plus a
  safety stock that differs per SKU. ``units_sold = min(demand, on hand)``: a stockout (on hand 0)
  sells nothing until the delivery. Stockouts are normal and not labeled.

Faults (after the reference period, at most one per store-SKU, on SKUs that normally sell, away
from calendar events). Each is simulated through the same inventory policy, so its consequences
(a stockout after a spike, a smaller order during a drop) are part of it; the label window runs
until the SKU is back on its fault-free path (usually the next delivery):

===============  ====================================================================  ====================
kind             effect                                                                labeled metrics
===============  ====================================================================  ====================
ghost_stock      the shelf is empty but the system keeps its on-hand: on_hand          units_sold;on_hand
                 constant > 0, no sales for 4-10 days (until the next delivery, when
                 a count writes the phantom stock off)
unplanned_spike  demand x1.8-3.0 for 2-5 days with no promotion in the calendar        units_sold;on_hand
sales_drop       sales at 20-40 % of demand for 5-14 days (delisted, misplaced)        units_sold;on_hand
===============  ====================================================================  ====================
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from anomaly_assets.demo.calendar import CalendarEvent, easter_sunday, public_holidays, thanksgiving
from anomaly_assets.demo.dataset import DemoData, Fault, changed_window

__all__ = ["DEFAULT_DAYS", "DEFAULT_SKUS", "DEFAULT_STORES", "FAULT_KINDS", "METRICS", "REFERENCE_DAYS", "simulate"]

METRICS: tuple[str, ...] = ("units_sold", "on_hand")
SOLD, ON_HAND = range(2)
FAULT_KINDS: tuple[str, ...] = ("ghost_stock", "unplanned_spike", "sales_drop")
DEFAULT_STORES, DEFAULT_SKUS, DEFAULT_DAYS = 12, 25, 365
DEFAULT_START = "2025-07-01"
REFERENCE_DAYS = 84  # fault-free reference: the first 12 weeks
REGIONS = (("US-NY", "US"), ("US-NJ", "US"), ("US-PA", "US"), ("US-MA", "US"), ("CA-ON", "CA"), ("GB-ENG", "GB"))
_REGION_P = (0.25, 0.15, 0.15, 0.1, 0.2, 0.15)
CATEGORIES = ("grocery", "household", "personal-care", "summer", "winter", "gifts")
_CATEGORY_P = (0.3, 0.2, 0.15, 0.12, 0.1, 0.13)
_WEEKDAY = np.array([0.85, 0.8, 0.85, 0.95, 1.15, 1.4, 1.0])  # Monday .. Sunday
_MAX_TAIL = 35  # a fault whose SKU is not back on its fault-free path this long after it is redrawn


def _season(category: str, dates: pd.DatetimeIndex) -> np.ndarray:
    """Yearly demand factor of a category (~1 on average), Christmas shopping included."""
    doy = np.asarray(dates.day_of_year, dtype=float)
    xmas = np.array([dt.date(y, 12, 24) for y in dates.year])
    before = np.asarray([(x - d).days for x, d in zip(xmas, dates.date, strict=True)], dtype=float)
    rush = np.where((before >= 0) & (before < 28), np.exp(-before / 10.0), 0.0)  # the weeks before Christmas
    base = {
        "summer": 1 + 0.55 * np.cos(2 * np.pi * (doy - 190) / 365.25),
        "winter": 1 + 0.5 * np.cos(2 * np.pi * (doy - 15) / 365.25),
        "gifts": 0.8 + 1.6 * rush,
    }.get(category, 1 + 0.05 * np.cos(2 * np.pi * (doy - 350) / 365.25))
    return base * (1 + 0.3 * rush)


def _calendar(rng: np.random.Generator, dates: pd.DatetimeIndex, countries: list[str], stores: list[str],
              skus: list[str]) -> list[CalendarEvent]:
    """Holidays and peak days per country, and the promotions the chain ran."""
    first, last = dates[0].date(), dates[-1].date()
    events: list[CalendarEvent] = []
    years = range(first.year, last.year + 1)
    for c in countries:
        scope = f"country:{c}"
        special: dict[dt.date, tuple[str, str, float]] = {}
        for d, name in public_holidays(c, dates).items():
            closed = name == "Christmas Day" or (name == "Thanksgiving Day" and c in ("US", "CA"))
            special[d] = ("closed", name, 0.0) if closed else ("holiday", name, 1.15)
            if name == "Boxing Day":
                special[d] = ("peak", name, 1.8)
        for y in years:
            special[thanksgiving(y) + dt.timedelta(days=1)] = ("peak", "Black Friday", 2.2)
            special[dt.date(y, 12, 24)] = ("peak", "Christmas Eve", 1.35)
            if c in ("GB", "CA"):
                special[easter_sunday(y)] = ("closed", "Easter Sunday", 0.0)
        events += [CalendarEvent(d, d, k, scope, n, lift) for d, (k, n, lift) in special.items() if first <= d <= last]
    # chain-wide sales every ~8 weeks, SKU promotions every ~6-10 weeks per SKU, a yearly store event
    day = first + dt.timedelta(days=int(rng.integers(10, 40)))
    while day <= last:
        events.append(CalendarEvent(day, min(last, day + dt.timedelta(days=3)), "promotion", "all", "chain sale",
                                    float(rng.uniform(1.2, 1.4))))
        day += dt.timedelta(days=int(rng.integers(49, 63)))
    for sku in skus:
        day = first + dt.timedelta(days=int(rng.integers(0, 60)))
        while day <= last:
            events.append(CalendarEvent(day, min(last, day + dt.timedelta(days=6)), "promotion", f"sku:{sku}",
                                        "price promotion", float(rng.uniform(1.5, 2.5))))
            day += dt.timedelta(days=int(rng.integers(42, 71)))
    for store in stores:
        day = first + dt.timedelta(days=int(rng.integers(0, len(dates) - 3)))
        events.append(CalendarEvent(day, day + dt.timedelta(days=2), "promotion", f"store:{store}",
                                    "store anniversary", float(rng.uniform(1.3, 1.5))))
    return [e for e in events if e.start <= last]


def _applies(event: CalendarEvent, country: np.ndarray, store: np.ndarray, sku: np.ndarray) -> np.ndarray:
    what, _, who = event.scope.partition(":")
    return {"all": np.ones(len(store), dtype=bool), "country": country == who, "store": store == who,
            "sku": sku == who}[what]


def _step(t, demand_t, open_t, review_t, order_up_to_t, lead, state, ghost=None):
    """One day of the inventory policy for a set of entities; updates ``state`` in place.

    ``state`` holds ``on_hand``, ``pending`` (quantity on order) and ``due`` (its arrival day, -1:
    none). ``ghost`` marks entities whose shelf is empty while the system keeps its on-hand.
    Returns the day's sales.
    """
    oh, pending, due = state["on_hand"], state["pending"], state["due"]
    arrive = due == t
    oh += np.where(arrive, pending, 0)
    pending[arrive], due[arrive] = 0, -1
    sales = np.where(open_t, np.minimum(demand_t, oh), 0)
    if ghost is not None:
        sales = np.where(ghost, 0, sales)
    oh -= sales
    order = review_t & open_t & (due < 0)
    qty = np.where(order, np.maximum(0, order_up_to_t - oh), 0)
    place = qty > 0
    pending[place], due[place] = qty[place], t + lead[place]
    return sales


def simulate(
    *, stores: int = DEFAULT_STORES, skus: int = DEFAULT_SKUS, days: int = DEFAULT_DAYS,
    start: str = DEFAULT_START, seed: int = 7,
) -> DemoData:
    """Simulate the store-SKUs with and without faults (no I/O); see the module docstring.

    Parameters
    ----------
    stores, skus : int
        Stores (``S01`` ...) and SKUs per store; entities are every store-SKU pair.
    days : int
        Length of the period; at least ``REFERENCE_DAYS + 42``.
    start : str
        First day (a date).
    seed : int
        The result is a pure function of all arguments.

    Returns
    -------
    DemoData
    """
    if stores < 1 or skus < 1:
        raise ValueError(f"stores and skus must be >= 1, got {stores} and {skus}")
    if days < REFERENCE_DAYS + 42:
        raise ValueError(f"days must be >= {REFERENCE_DAYS + 42} (a {REFERENCE_DAYS}-day reference, then faults), got {days}")
    t_len = int(days)
    dates = pd.date_range(pd.Timestamp(start).normalize(), periods=t_len, freq="D", tz="UTC").as_unit("s")
    rng_ent, rng_noise, rng_fault = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))

    # ---- stores, SKUs, entities (store-major: one landing file per store) ----------------------
    store_ids = [f"S{k + 1:0{max(2, len(str(stores)))}d}" for k in range(stores)]
    region_idx = rng_ent.choice(len(REGIONS), size=stores, p=_REGION_P)
    store_size = rng_ent.uniform(0.6, 1.6, stores)
    store_week = _WEEKDAY[None, :] * rng_ent.lognormal(0.0, 0.05, (stores, 7))
    store_week /= store_week.mean(axis=1, keepdims=True)
    review_day = rng_ent.integers(0, 5, stores)
    lead_store = rng_ent.integers(2, 5, stores)
    catalog = np.sort(rng_ent.choice(np.arange(1, 10_000), size=skus, replace=False))
    sku_ids = [f"SKU{c:04d}" for c in catalog]
    category = rng_ent.choice(len(CATEGORIES), size=skus, p=_CATEGORY_P)
    popularity = np.clip(np.exp(rng_ent.normal(np.log(1.5), 1.2, skus)), 0.1, 40.0)
    price = np.round(np.exp(rng_ent.normal(np.log(12.0), 0.8, skus)), 2) + 0.0
    dispersion = rng_ent.uniform(2.0, 8.0, skus)
    sku_growth = rng_ent.normal(0.0, 0.12, skus)

    st = np.repeat(np.arange(stores), skus)
    sk = np.tile(np.arange(skus), stores)
    n = st.size
    ids = np.array([f"{store_ids[a]}-{sku_ids[b]}" for a, b in zip(st, sk, strict=True)])
    country = np.array([REGIONS[region_idx[a]][1] for a in st])
    level = popularity[sk] * store_size[st] * rng_ent.lognormal(0.0, 0.25, n)
    safety_z = rng_ent.uniform(0.0, 1.6, n)
    presentation = rng_ent.integers(2, 6, n)  # shelf minimum
    slow = level < 0.5

    # ---- calendar and expected demand ---------------------------------------------------------
    events = _calendar(rng_ent, dates, sorted(set(country)), store_ids, sku_ids)
    day_of = {d: j for j, d in enumerate(dates.date)}
    lift = np.ones((n, t_len))
    touched = np.zeros((n, t_len), dtype=bool)  # any calendar event: faults stay away from them
    store_arr, sku_arr = np.asarray(store_ids)[st], np.asarray(sku_ids)[sk]
    for e in events:
        rows = _applies(e, country, store_arr, sku_arr)
        cols = slice(day_of[e.start], day_of[min(e.end, dates[-1].date())] + 1)
        lift[rows, cols] *= e.lift
        touched[rows, cols] = True
    dow = np.asarray(dates.day_of_week)
    years = np.arange(t_len) / 365.25
    seasons = np.stack([_season(c, dates) for c in CATEGORIES])
    mu = (level[:, None] * store_week[st][:, dow] * seasons[category[sk]]
          * np.exp(sku_growth[sk][:, None] * years) * lift)
    open_ = lift > 0
    demand = rng_noise.poisson(mu * rng_noise.gamma(dispersion[sk][:, None], 1.0 / dispersion[sk][:, None], (n, t_len)))

    # ---- replenishment: order up to the forecast of the protection interval -------------------
    period = np.where(slow, 14, 7)
    lead = lead_store[st]
    week_no = np.arange(t_len) // 7
    review = (dow[None, :] == review_day[st][:, None]) & ((period[:, None] == 7) | (week_no[None, :] % 2 == 0))
    cover = period + lead
    padded = np.concatenate([np.zeros((n, 1)), np.cumsum(np.pad(mu, ((0, 0), (0, 29)), mode="edge"), axis=1)], axis=1)
    idx = np.arange(t_len)[None, :]
    forecast = padded[np.arange(n)[:, None], idx + 1 + cover[:, None]] - padded[:, 1 : t_len + 1]
    k_cover = dispersion[sk][:, None] * cover[:, None]
    order_up_to = np.ceil(forecast + safety_z[:, None] * np.sqrt(forecast + forecast**2 / k_cover)).astype(np.int64)
    order_up_to += presentation[:, None]

    state = {"on_hand": order_up_to[:, 0].copy(), "pending": np.zeros(n, np.int64), "due": np.full(n, -1)}
    clean = np.empty((n, 2, t_len))
    history = np.empty((3, n, t_len), dtype=np.int64)  # end-of-day state, to restart a fault from
    for t in range(t_len):
        clean[:, SOLD, t] = _step(t, demand[:, t], open_[:, t], review[:, t], order_up_to[:, t], lead, state)
        clean[:, ON_HAND, t] = state["on_hand"]
        history[:, :, t] = state["on_hand"], state["pending"], state["due"]

    values = clean.copy()
    inputs = dict(demand=demand, mu=mu, open=open_, review=review, order_up_to=order_up_to, lead=lead, history=history)
    faults = _inject(rng_fault, values, clean, inputs, touched, n, t_len)

    entities = pd.DataFrame({
        "entity_id": ids,
        "site": store_arr,
        "model": np.asarray(CATEGORIES)[category[sk]],
        "tags": np.where(slow, "slow-mover", np.where(level >= 5, "fast-mover", "medium-mover")),
        "country": country,
        "region": [REGIONS[region_idx[a]][0] for a in st],
        "store": store_arr,
        "sku": sku_arr,
        "price_usd": price[sk],
    })
    return DemoData(
        kind="retail", entities=entities, dates=dates, metrics=METRICS, decimals=(0, 0), values=values,
        clean=clean, faults=faults, calendar=tuple(events), reference_days=REFERENCE_DAYS, file_keys=store_arr,
        layout="wide", fault_kinds=FAULT_KINDS, seed=seed,
        truth={"mean": mu, "dispersion": dispersion[sk], "events": touched},
    )


def _replay(i: int, a: int, kind: str, length: int, rng: np.random.Generator, inp: dict, clean: np.ndarray,
            t_len: int) -> tuple[np.ndarray, int] | None:
    """Run entity ``i`` through the policy from day ``a`` with the fault; ``None`` to redraw.

    Returns its faulty ``(metrics, days)`` from ``a`` on and the last day simulated (after that
    the SKU is back on its fault-free path, so the rest equals ``clean``).
    """
    h = inp["history"][:, i, a - 1]
    state = {"on_hand": h[0:1].copy(), "pending": h[1:2].copy(), "due": h[2:3].copy()}
    lead = inp["lead"][i : i + 1]
    end = a + length - 1
    if kind == "unplanned_spike":
        extra = rng.poisson(inp["mu"][i, a : end + 1] * (rng.uniform(1.8, 3.0) - 1.0))
    elif kind == "sales_drop":
        keep = rng.uniform(0.2, 0.4)
    out = np.zeros((2, t_len - a))
    for t in range(a, t_len):
        d = inp["demand"][i, t : t + 1]
        ghost = None
        if a <= t <= end:
            if kind == "unplanned_spike":
                d = d + extra[t - a]
            elif kind == "sales_drop":
                d = rng.binomial(d, keep)
            elif state["due"][0] == t:  # ghost_stock: the delivery ends it
                end = t - 1
            else:
                ghost = np.ones(1, dtype=bool)
        if kind == "ghost_stock" and t == end + 1:
            state["on_hand"][0] = 0  # a count writes the phantom stock off
        out[SOLD, t - a] = _step(t, d, inp["open"][i, t : t + 1], inp["review"][i, t : t + 1],
                                 inp["order_up_to"][i, t : t + 1], lead, state, ghost)[0]
        out[ON_HAND, t - a] = state["on_hand"][0]
        synced = all(state[k][0] == inp["history"][j, i, t] for j, k in enumerate(("on_hand", "pending", "due")))
        if t > end and synced and (out[:, t - a] == clean[i, :, t]).all():
            if kind == "ghost_stock" and end - a + 1 < 4:
                return None  # too short to be ghost stock: a delivery came within days
            return out[:, : t - a + 1], t
        if t > end + _MAX_TAIL:
            return None
    return out, t_len - 1


def _inject(rng: np.random.Generator, values: np.ndarray, clean: np.ndarray, inp: dict, touched: np.ndarray,
            n: int, t_len: int) -> tuple[Fault, ...]:
    """Place ~8 ghost-stock, 6 spike and 6 drop faults per 300 entities and a year, in place."""
    scale = n / (DEFAULT_STORES * DEFAULT_SKUS) * (t_len - REFERENCE_DAYS) / (DEFAULT_DAYS - REFERENCE_DAYS)
    wanted = {k: max(1, round(c * scale)) for k, c in zip(FAULT_KINDS, (8, 6, 6), strict=True)}
    spec = {"ghost_stock": (4, 11, 1.0), "unplanned_spike": (2, 6, 3.0), "sales_drop": (5, 15, 2.0)}
    used: set[int] = set()
    faults: list[Fault] = []
    for kind, count in wanted.items():
        lo_len, hi_len, min_mu = spec[kind]
        placed = 0
        for _ in range(400 * count):
            if placed == count:
                break
            i = int(rng.integers(n))
            length = int(rng.integers(lo_len, hi_len))
            a = int(rng.integers(REFERENCE_DAYS + 1, t_len - length - 14))
            span = slice(a - 2, a + length + 2)
            if (i in used or touched[i, span].any() or inp["mu"][i, a : a + length].mean() < min_mu
                    or (kind == "ghost_stock" and clean[i, ON_HAND, a - 1] < 2)):
                continue
            got = _replay(i, a, kind, length, rng, inp, clean, t_len)
            if got is None:
                continue
            out, last = got
            values[i, :, a : last + 1] = out
            f = changed_window(clean[i], values[i], METRICS, i, kind, lo=a, hi=last)
            if f is None:
                values[i] = clean[i]
                continue
            faults.append(f)
            used.add(i)
            placed += 1
    return tuple(sorted(faults, key=lambda f: (f.entity_idx, f.start_idx)))

