"""Calendar phases a series may repeat on: time of day, day of week, day of month, holidays.

Each *component* maps a timestamp to a bin; the baseline (``core/baseline.py``) learns one
additive effect per bin and keeps a component only where the data show it (see there). Bins are
UTC: a fleet that reports in local time should land its files with local timestamps, or accept
that its daily cycle is shifted (the effect is learnt per bin, so a shift costs nothing but
readability).

- ``day``: the phase within the day, at most ``day_bins`` bins (15-minute bins for 1-minute data,
  one bin per sample for hourly data). Sub-daily data only.
- ``week``: the day of the week (Monday = 0).
- ``month``: the day of the month (1st = 0): rent due on the 1st, payroll mid-month. Hourly or
  coarser data.
- ``bday``: the business day of the month (first business day = 0; weekends and holidays share
  one more bin): bank settlements that land on the first business day after the 1st. Hourly or
  coarser data.
- ``weekend_day``: the hour of the day, apart for weekdays and weekends (48 bins at most): a
  working-hours profile that weekends do not share, which ``day`` + ``week`` cannot add up to.
  Sub-daily data with two weekends of history.
- ``holiday``: whether the day is a public holiday or a calendar event, when the caller passes a
  mask (``holidays`` package per country, ``calendar.csv``); one effect for all such days.

Everything takes epoch seconds (int64 or float) and returns numpy arrays; nothing here reads
anything.
"""

from __future__ import annotations

import numpy as np

COMPONENTS: tuple[str, ...] = ("day", "week", "month", "bday", "holiday", "weekend_day")
DAY_S = 86_400
# A refinement is only judged on top of what it refines: weekend_day is the weekend's own daily
# profile, so a plain daily cycle stays `day` and a weekend difference must earn its place.
REQUIRES = {"weekend_day": "day"}
# How much history a component needs before it can be judged: two full cycles of it.
_MIN_SPAN_S = {"day": 2 * DAY_S, "week": 14 * DAY_S, "month": 62 * DAY_S, "bday": 62 * DAY_S, "holiday": 28 * DAY_S,
              "weekend_day": 14 * DAY_S}


def bins(ts: np.ndarray, interval: float, component: str, day_bins: int = 96,
         holiday: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Bin of every timestamp for one component.

    Parameters
    ----------
    ts : ndarray of shape (n,)
        Epoch seconds, UTC.
    interval : float
        The series' sampling interval in seconds (sets the ``day`` bins).
    component : {"day", "week", "month", "bday", "holiday", "weekend_day"}
    day_bins : int
        Most bins a day is split into.
    holiday : ndarray of bool, shape (n,), optional
        Holiday mask (``holiday`` component only).

    Returns
    -------
    bins : ndarray of int64, shape (n,)
    n_bins : int
    """
    ts = np.asarray(ts)
    if component == "day":
        nb = day_bin_count(interval, day_bins)
        return ((ts % DAY_S) * nb // DAY_S).astype(np.int64), nb
    if component == "week":
        return ((ts // DAY_S + 3) % 7).astype(np.int64), 7  # 1970-01-01 was a Thursday
    if component == "month":
        days = (ts // DAY_S).astype("int64").astype("datetime64[D]")
        return (days - days.astype("datetime64[M]")).astype(np.int64), 31
    if component == "bday":
        return business_day_of_month(ts, holiday), 24
    if component == "weekend_day":  # hourly at most: a weekend bin holds a few points a weekend
        hour, nb = bins(ts, interval, "day", min(day_bins, 24))
        weekend = bins(ts, interval, "week")[0] >= 5
        return weekend * nb + hour, 2 * nb
    if component == "holiday":
        if holiday is None:
            return np.zeros(len(ts), np.int64), 2
        return np.asarray(holiday, bool).astype(np.int64), 2
    raise ValueError(f"unknown calendar component {component!r}; expected one of {COMPONENTS}")


def day_bin_count(interval: float, day_bins: int = 96) -> int:
    """Bins of the ``day`` component: one per sample, at most ``day_bins``."""
    return int(max(1, min(round(DAY_S / max(interval, 1.0)), day_bins)))


def applicable(component: str, interval: float, span_s: float, has_holidays: bool = False) -> bool:
    """Whether ``component`` can be judged on a history of ``span_s`` seconds at this interval.

    ``day`` and ``weekend_day`` need sub-daily data (at least 2 samples a day); ``month`` needs
    hourly or coarser data; ``holiday`` needs a holiday mask with at least one holiday; each needs
    two full cycles.
    """
    if span_s < _MIN_SPAN_S[component]:
        return False
    if component in ("day", "weekend_day"):
        return DAY_S / interval >= 2
    if component in ("month", "bday"):
        return interval >= 3_600
    if component == "holiday":
        return has_holidays
    return True


def business_day_of_month(ts: np.ndarray, holiday: np.ndarray | None = None) -> np.ndarray:
    """Business day of the month of every timestamp (0 = first), 23 for weekends and holidays.

    A business day is Monday to Friday and not a holiday (``holiday``: a mask of the points).
    """
    day = (np.asarray(ts) // DAY_S).astype(np.int64)
    if len(day) == 0:
        return np.zeros(0, np.int64)
    first = int((day.min().astype("datetime64[D]").astype("datetime64[M]")).astype("datetime64[D]").astype(np.int64))
    span = np.arange(first, int(day.max()) + 1)
    business = (span + 3) % 7 < 5
    if holiday is not None:
        hol_days = np.unique(day[np.asarray(holiday, bool)])
        business &= ~np.isin(span, hol_days)
    month = span.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
    count = np.cumsum(business)
    # business days before each day within its month
    month_start = np.r_[True, month[1:] != month[:-1]]
    base = np.maximum.accumulate(np.where(month_start, np.r_[0, count[:-1]], 0))
    ordinal = count - base - 1
    out = np.where(business, np.minimum(ordinal, 22), 23)
    return out[day - first].astype(np.int64)
