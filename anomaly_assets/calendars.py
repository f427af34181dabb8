"""Holidays per entity, for the detector's ``holiday`` calendar component.

A day is a holiday for an entity when it is a public holiday of the entity's country
(``entities.csv`` column ``country``, looked up with the ``holidays`` package) or a ``holiday``
row of the optional ``calendar.csv`` (``start,end,kind,scope,name``) whose scope covers the
entity: ``all``, ``country:XX``, ``site:NAME`` or ``entity:ID``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

_DAY_NS = 86_400 * 10**9


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


def holiday_days(entity_ids: Iterable[str], years: Iterable[int], entities: pd.DataFrame | None = None,
                 calendar: pd.DataFrame | None = None) -> dict[str, np.ndarray]:
    """Holiday days (days since the epoch, sorted int64) of every entity that has any.

    Parameters
    ----------
    entity_ids : iterable of str
    years : iterable of int
        Years to look holidays up for.
    entities : DataFrame, optional
        entities.csv (entity_id, and optionally country, site).
    calendar : DataFrame, optional
        :func:`load_calendar`'s frame.

    Returns
    -------
    dict
        entity_id -> days; entities without holidays are left out.
    """
    ids = list(dict.fromkeys(str(e) for e in entity_ids))
    years = sorted(set(int(y) for y in years))
    info = pd.DataFrame({"entity_id": ids})
    if entities is not None and len(entities):
        cols = [c for c in ("entity_id", "country", "site") if c in entities.columns]
        info = info.merge(entities[cols].astype(str).drop_duplicates("entity_id"), on="entity_id", how="left")
    by_country: dict[str, set[int]] = {}
    if "country" in info.columns and years:
        import holidays as hol

        for country in info["country"].dropna().unique():
            try:
                days = hol.country_holidays(country, years=years)
            except (NotImplementedError, KeyError):
                continue  # a country the package does not know: no public holidays for it
            by_country[country] = {int(pd.Timestamp(d).value // _DAY_NS) for d in days}
    events: list[tuple[str, set[int]]] = []
    if calendar is not None and len(calendar):
        for row in calendar[calendar["kind"].str.lower() == "holiday"].itertuples():
            span = range(int(row.start.value // _DAY_NS), int(row.end.value // _DAY_NS) + 1)
            events.append((str(row.scope), set(span)))
    out = {}
    for row in info.itertuples():
        days = set(by_country.get(getattr(row, "country", None), ()))
        for scope, span in events:
            kind, _, name = scope.partition(":")
            if (scope == "all" or (kind == "country" and name == getattr(row, "country", None))
                    or (kind == "site" and name == getattr(row, "site", None))
                    or (kind == "entity" and name == row.entity_id)):
                days |= span
        if days:
            out[row.entity_id] = np.array(sorted(days), dtype=np.int64)
    return out


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
