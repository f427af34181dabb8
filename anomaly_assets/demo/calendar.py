"""Calendar logic shared by the business demo kinds: public holidays, business days, settlement.

Holidays come from the ``holidays`` package, one calendar per country: the US federal holidays
(the Federal Reserve's, so the days ACH does not settle), Ontario's statutory holidays for Canada
and England's bank holidays for Great Britain. Every entity of a country follows its calendar.

What each kind does on those days (no ACH settlement, a closed store, a Black Friday peak) is up
to the kind; the days it applied are written to ``calendar.csv`` (:func:`calendar_frame`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache

import holidays
import numpy as np
import pandas as pd
from dateutil.easter import easter

__all__ = [
    "COUNTRY_SUBDIVISION",
    "CalendarEvent",
    "business_days",
    "calendar_frame",
    "holiday_matrix",
    "public_holidays",
    "settle",
    "thanksgiving",
]

# The one subdivision whose calendar each country's entities follow (None: national).
COUNTRY_SUBDIVISION: dict[str, str | None] = {"US": None, "CA": "ON", "GB": "ENG"}
CALENDAR_COLUMNS = ("start", "end", "kind", "scope", "name", "lift")


@dataclass(frozen=True)
class CalendarEvent:
    """One row of ``calendar.csv``: an inclusive date range, what happened and to whom.

    ``scope`` is ``all``, ``country:<CC>``, ``store:<id>``, ``sku:<id>`` or ``entity:<id>``;
    ``lift`` is the demand multiplier a retail event applied (0 for a closed day), ``None`` where
    the effect is not a multiplier (a bank holiday's settlement shift).
    """

    start: dt.date
    end: dt.date
    kind: str
    scope: str
    name: str
    lift: float | None = None


@lru_cache(maxsize=32)
def _holidays(country: str, years: tuple[int, ...]) -> dict[dt.date, str]:
    if country not in COUNTRY_SUBDIVISION:
        raise ValueError(f"no holiday calendar for country {country!r} (known: {', '.join(COUNTRY_SUBDIVISION)})")
    cal = holidays.country_holidays(country, subdiv=COUNTRY_SUBDIVISION[country], years=list(years))
    return dict(sorted(cal.items()))


def public_holidays(country: str, dates: pd.DatetimeIndex) -> dict[dt.date, str]:
    """Public holidays of a country within a period.

    Parameters
    ----------
    country : str
        ``US``, ``CA`` or ``GB`` (see ``COUNTRY_SUBDIVISION``).
    dates : pandas.DatetimeIndex
        The period's days.

    Returns
    -------
    dict
        ``datetime.date -> name`` for the holidays that fall on ``dates``, in date order.
    """
    years = tuple(range(dates[0].year, dates[-1].year + 1))
    wanted = set(dates.date)
    return {d: n for d, n in _holidays(country, years).items() if d in wanted}


def holiday_matrix(countries: np.ndarray, dates: pd.DatetimeIndex) -> np.ndarray:
    """Which days are public holidays for which entity.

    Parameters
    ----------
    countries : ndarray
        Each entity's country code, shape ``(entities,)``.
    dates : pandas.DatetimeIndex
        The period's days.

    Returns
    -------
    ndarray
        Boolean ``(entities, days)``.
    """
    day_index = {d: j for j, d in enumerate(dates.date)}
    out = np.zeros((len(countries), len(dates)), dtype=bool)
    for country in np.unique(countries):
        cols = [day_index[d] for d in public_holidays(str(country), dates)]
        rows = np.flatnonzero(countries == country)
        out[np.ix_(rows, cols)] = True
    return out


def business_days(holiday: np.ndarray, dates: pd.DatetimeIndex, closed_weekdays: tuple[int, ...] = (5, 6)) -> np.ndarray:
    """Which days are open for business: not a closed weekday, not a holiday.

    Parameters
    ----------
    holiday : ndarray
        Boolean ``(entities, days)`` from :func:`holiday_matrix`.
    dates : pandas.DatetimeIndex
        The period's days.
    closed_weekdays : tuple of int
        Weekdays closed (Monday = 0); banks: Saturday and Sunday.

    Returns
    -------
    ndarray
        Boolean ``(entities, days)``.
    """
    weekday = np.asarray(dates.day_of_week)
    return ~holiday & ~np.isin(weekday, closed_weekdays)[None, :]


def settle(amounts: np.ndarray, open_days: np.ndarray) -> np.ndarray:
    """Move what happened on closed days to the next open day (ACH, the office's cash).

    Parameters
    ----------
    amounts : ndarray
        ``(entities, days)``, any numeric dtype.
    open_days : ndarray
        Boolean, same shape: the days that settle.

    Returns
    -------
    ndarray
        Same shape and dtype; closed days hold 0. What falls after the last open day of the
        period settles after it and is not in the result (the next period's first day would).
    """
    n, t = amounts.shape
    idx = np.where(open_days, np.arange(t)[None, :], t)
    # next open day at or after each day: a reversed running minimum
    nxt = np.minimum.accumulate(idx[:, ::-1], axis=1)[:, ::-1]
    out = np.zeros((n, t + 1), dtype=amounts.dtype)
    np.add.at(out, (np.repeat(np.arange(n), t), nxt.ravel()), amounts.ravel())
    return out[:, :t]


def thanksgiving(year: int) -> dt.date:
    """US Thanksgiving: the fourth Thursday of November."""
    first = dt.date(year, 11, 1)
    return first + dt.timedelta(days=(3 - first.weekday()) % 7 + 21)


def easter_sunday(year: int) -> dt.date:
    """Western Easter Sunday (large shops in England are closed by law)."""
    return easter(year)


def calendar_frame(events: list[CalendarEvent]) -> pd.DataFrame:
    """The rows of ``calendar.csv``.

    Parameters
    ----------
    events : list of CalendarEvent

    Returns
    -------
    pandas.DataFrame
        ``start,end,kind,scope,name,lift`` (ISO dates, inclusive; ``lift`` rounded to 3
        decimals, NaN where not a multiplier), sorted by start, kind, scope and name.
    """
    df = pd.DataFrame(
        [(e.start.isoformat(), e.end.isoformat(), e.kind, e.scope, e.name, e.lift) for e in events],
        columns=list(CALENDAR_COLUMNS),
    )
    df["lift"] = df["lift"].astype("float64").round(3)
    return df.sort_values(["start", "kind", "scope", "name"], ignore_index=True, kind="stable")
