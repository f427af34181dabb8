"""Known event days per entity: for the detector's ``holiday`` calendar component and for the
alert rules, which stay quiet on them.

An entity's events are the public holidays of its country (``entities.csv`` column ``country``,
looked up with the ``holidays`` package) and the rows of the optional ``calendar.csv``
(``start,end,kind,scope,name``) whose scope covers it: ``all``, ``entity:ID`` or
``<column>:<value>`` of the entity register (``country:XX``, ``site:NAME``, ``sku:...``). Its
holidays are the public holidays and the ``holiday`` rows among them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd


def load_calendar(path: Path | None) -> pd.DataFrame | None:
    """calendar.csv as a frame (start, end as dates; kind; scope), or None when absent.

    Raises ValueError naming the file and column when a required column is missing or a date
    does not parse.
    """
    if path is None or not Path(path).exists():
        return None
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("start", "end", "kind", "scope") if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; expected start,end,kind,scope[,name]")
    for col in ("start", "end"):
        parsed = pd.to_datetime(frame[col], errors="coerce", utc=True)
        bad = parsed.isna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(f"{path} line {i + 2}: {col} {frame[col].iloc[i]!r} is not a date")
        frame[col] = parsed.dt.floor("D")
    return frame


def holidays_in(events: pd.DataFrame) -> dict[str, np.ndarray]:
    """entity_id -> sorted int64 days since the epoch of the holidays among :func:`event_days`'
    rows (public holidays and ``holiday`` rows of the calendar)."""
    return _days_by_entity(events, _is_holiday(events))


def others_in(events: pd.DataFrame) -> dict[str, np.ndarray]:
    """entity_id -> sorted int64 days since the epoch of its known events that are not holidays
    (promotions, peaks, closures: :func:`event_days`' other rows), on days that are not one of
    its holidays: the detector learns one effect for them, apart from the holidays'."""
    hol = _is_holiday(events)
    keys = pd.MultiIndex.from_arrays([events["entity_id"], _epoch_days(events)])
    return _days_by_entity(events, ~hol & ~keys.isin(keys[hol]))


def _is_holiday(events: pd.DataFrame) -> pd.Series:
    return events["kind"].str.lower().isin(["public_holiday", "holiday"])


def _epoch_days(events: pd.DataFrame) -> pd.Series:
    return (events["day"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(days=1)


def _days_by_entity(events: pd.DataFrame, rows) -> dict[str, np.ndarray]:
    """entity_id -> sorted unique days since the epoch of ``events[rows]``."""
    ev = events[rows]
    return {str(e): np.unique(d.to_numpy(np.int64)) for e, d in _epoch_days(ev).groupby(ev["entity_id"], sort=False)}


def event_days(entity_ids: Iterable[str], years: Iterable[int], entities: pd.DataFrame | None = None,
               calendar: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every known event day of every entity: public holidays of its country and each row of
    ``calendar.csv`` (holidays, bank holidays, promotions, peaks, closures) whose scope covers it.

    A scope is ``all``, ``entity:<id>``, or ``<column>:<value>`` matching a column of the entity
    register (``country:US``, ``site:houston``, ``store:S03``, ``sku:SKU0042``): the alert rules
    stay quiet on these days, whatever the detector made of them.

    Parameters
    ----------
    entity_ids : iterable of str
    years : iterable of int
        Years to look public holidays up for.
    entities : DataFrame, optional
        The entity register (entities.csv): entity_id and any columns scopes name.
    calendar : DataFrame, optional
        :func:`load_calendar`'s frame.

    Returns
    -------
    DataFrame
        entity_id, day (UTC midnight), kind, name; one row per entity, day and event.
    """
    ids = list(dict.fromkeys(str(e) for e in entity_ids))
    info = pd.DataFrame({"entity_id": ids})
    if entities is not None and len(entities):
        info = info.merge(entities.astype(str).drop_duplicates("entity_id"), on="entity_id", how="left")
    parts = []
    years = sorted(set(int(y) for y in years))
    if "country" in info.columns and years:
        import holidays as hol

        for country, group in info.dropna(subset=["country"]).groupby("country"):
            try:
                days = hol.country_holidays(country, years=years)
            except (NotImplementedError, KeyError):
                continue  # a country the package does not know: no public holidays for it
            for d, name in days.items():
                parts.append(pd.DataFrame({"entity_id": group["entity_id"].to_numpy(), "day": pd.Timestamp(d, tz="UTC"),
                                           "kind": "public_holiday", "name": name}))
    if calendar is not None and len(calendar):
        for row in calendar.itertuples():
            scope = str(row.scope)
            col, _, value = scope.partition(":")
            if scope == "all":
                who = info["entity_id"]
            elif col == "entity":
                who = info["entity_id"][info["entity_id"] == value]
            elif col in info.columns:
                who = info["entity_id"][info[col] == value]
            else:
                continue  # a scope on a column the register does not have covers no entity
            if who.empty:
                continue
            days = pd.date_range(row.start, row.end, freq="D")
            parts.append(pd.DataFrame({"entity_id": np.repeat(who.to_numpy(), len(days)),
                                       "day": np.tile(days, len(who)), "kind": str(row.kind),
                                       "name": str(getattr(row, "name", "") or "")}))
    if not parts:
        return pd.DataFrame({"entity_id": pd.Series(dtype=object), "day": pd.Series(dtype="datetime64[us, UTC]"),
                             "kind": pd.Series(dtype=object), "name": pd.Series(dtype=object)})
    out = pd.concat(parts, ignore_index=True)
    out["day"] = pd.to_datetime(out["day"], utc=True).astype("datetime64[us, UTC]")
    return out.drop_duplicates(["entity_id", "day", "kind", "name"]).reset_index(drop=True)
