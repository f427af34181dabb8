"""What a business demo kind produces, and how it lands on disk.

A kind simulates a :class:`DemoData` (values with and without faults, the faults, the calendar it
applied) and :func:`write_demo` writes it like a real feed would drop it, plus the ground truth::

    <out>/landing/<YYYY-MM-DD>/<file>.csv   one file per day (and per store for retail)
    <out>/labels.csv     entity_id,start,end,metrics        (inclusive, metrics ';'-separated)
    <out>/faults.csv     entity_id,fault_kind,start,end,metrics
    <out>/entities.csv   entity_id,site,model,tags,country,region[,...kind's own columns]
    <out>/splits.csv     entity_id,test_start               (faults only from test_start on)
    <out>/calendar.csv   start,end,kind,scope,name,lift     (holidays and promotions applied)

Label windows are derived from the data, not from the intent: a window runs from the first to the
last point where the faulty series differs from the fault-free one (:func:`changed_window`), so
labels are exactly the changed points, consequences included (a stockout after a sales spike).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

from anomaly_assets.demo.calendar import CalendarEvent, calendar_frame

__all__ = ["DemoData", "DemoSummary", "Fault", "changed_window", "iso", "write_demo"]


def iso(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Fault:
    """One labeled fault window on one entity (inclusive day indices)."""

    entity_idx: int
    fault_kind: str
    start_idx: int
    end_idx: int
    metrics: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class DemoData:
    """A simulated business fleet in memory.

    ``values[i, m, t]`` is metric ``metrics[m]`` of entity ``entities.entity_id[i]`` on
    ``dates[t]``, exactly as written (rounded to ``decimals[m]``); ``clean`` is the same without
    faults. ``file_keys[i]`` names the landing file entity *i* is written to each day;
    ``layout`` is ``"wide"`` (``entity_id,timestamp,<metrics>``) or ``"long"``
    (``entity_id,metric,timestamp,value``).

    ``truth`` holds what the simulation knows and no detector can: for retail, ``mean`` (E, T),
    each day's expected demand, ``dispersion`` (E,), its negative-binomial shape, and ``events``
    (E, T), the days a calendar event touches. ``benchmarks/business_ceiling.py`` uses it for what
    a rule that knew the demand could find.
    """

    kind: str
    entities: pd.DataFrame
    dates: pd.DatetimeIndex
    metrics: tuple[str, ...]
    decimals: tuple[int, ...]
    values: np.ndarray
    clean: np.ndarray
    faults: tuple[Fault, ...]
    calendar: tuple[CalendarEvent, ...]
    reference_days: int
    file_keys: np.ndarray
    layout: str
    fault_kinds: tuple[str, ...]
    seed: int
    truth: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def entity_ids(self) -> np.ndarray:
        return self.entities["entity_id"].to_numpy()

    @property
    def test_start(self) -> pd.Timestamp:
        return self.dates[self.reference_days]

    def faults_frame(self) -> pd.DataFrame:
        """``entity_id,fault_kind,start,end,metrics`` (ISO ``Z`` strings), by entity then start."""
        ids = self.entity_ids
        return pd.DataFrame(
            {
                "entity_id": [ids[f.entity_idx] for f in self.faults],
                "fault_kind": [f.fault_kind for f in self.faults],
                "start": [iso(self.dates[f.start_idx]) for f in self.faults],
                "end": [iso(self.dates[f.end_idx]) for f in self.faults],
                "metrics": [";".join(f.metrics) for f in self.faults],
            },
            columns=["entity_id", "fault_kind", "start", "end", "metrics"],
        )

    def labels_frame(self) -> pd.DataFrame:
        return self.faults_frame().drop(columns="fault_kind")

    def splits_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"entity_id": self.entity_ids, "test_start": iso(self.test_start)})

    def label_mask(self) -> np.ndarray:
        """Boolean ``(entities, metrics, days)``: labeled points (window x its metrics)."""
        mask = np.zeros(self.values.shape, dtype=bool)
        for f in self.faults:
            rows = [self.metrics.index(m) for m in f.metrics]
            mask[f.entity_idx, rows, f.start_idx : f.end_idx + 1] = True
        return mask


@dataclass(frozen=True)
class DemoSummary:
    """What :func:`anomaly_assets.demo.generate` wrote.

    ``rows`` counts observations in long format (entities x metrics x periods); ``faults_by_kind``
    counts label windows (a processor-wide outage has one per facility).
    """

    kind: str
    entities: int
    sites: int
    metrics: tuple[str, ...]
    freq: str
    periods: int
    rows: int
    files: int
    faulty_entities: int
    faults_by_kind: Mapping[str, int] = field(hash=False)
    first_timestamp: pd.Timestamp
    last_timestamp: pd.Timestamp
    test_start: pd.Timestamp
    out_dir: Path
    landing_dir: Path
    labels_path: Path
    faults_path: Path
    entities_path: Path
    splits_path: Path
    calendar_path: Path | None
    seed: int

    @property
    def label_windows(self) -> int:
        return sum(self.faults_by_kind.values())

    def describe(self) -> str:
        """One line: the kind, its size, period, files and faults."""
        faults = ", ".join(f"{k} {n}" for k, n in self.faults_by_kind.items())
        return (f"{self.kind}: {self.entities} entities x {len(self.metrics)} metrics, {self.periods} periods "
                f"({self.freq}) {self.first_timestamp:%Y-%m-%d}..{self.last_timestamp:%Y-%m-%d}, {self.rows:,} rows "
                f"in {self.files} files; faults from {self.test_start:%Y-%m-%d}: {faults} -> {self.out_dir}")


def changed_window(
    clean: np.ndarray, values: np.ndarray, metrics: tuple[str, ...], entity_idx: int, kind: str,
    lo: int = 0, hi: int | None = None,
) -> Fault | None:
    """The fault of one entity as the data shows it: first to last changed day, changed metrics.

    Parameters
    ----------
    clean, values : ndarray
        The entity's ``(metrics, days)`` without and with faults.
    metrics : tuple of str
        Names of the rows.
    entity_idx : int
    kind : str
        The fault kind to record.
    lo, hi : int
        Look only at days ``lo .. hi`` (inclusive; default all): the span of this one fault
        when the entity has others.

    Returns
    -------
    Fault or None
        ``None`` if nothing changed in the span.
    """
    hi = clean.shape[1] - 1 if hi is None else hi
    diff = clean[:, lo : hi + 1] != values[:, lo : hi + 1]
    days = np.flatnonzero(diff.any(axis=0))
    if days.size == 0:
        return None
    touched = tuple(m for j, m in enumerate(metrics) if diff[j].any())
    return Fault(int(entity_idx), kind, lo + int(days[0]), lo + int(days[-1]), touched)


def _format(values: np.ndarray, decimals: int) -> np.ndarray:
    if decimals == 0:
        return np.asarray([str(int(v)) for v in values.ravel()], dtype=object).reshape(values.shape)
    spec = f"{{:.{decimals}f}}"
    return np.asarray([spec.format(v) for v in values.ravel()], dtype=object).reshape(values.shape)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(text.encode())
    os.replace(tmp, path)


def _lines(data: DemoData) -> np.ndarray:
    """``(entities, days)`` of the text each entity adds to each day's file."""
    n, n_m, t = data.values.shape
    ids = data.entity_ids.astype(object)[:, None]
    ts = np.asarray(data.dates.strftime("%Y-%m-%dT%H:%M:%SZ"), dtype=object)[None, :]
    cells = [_format(data.values[:, j, :], data.decimals[j]) for j in range(n_m)]
    if data.layout == "wide":
        out = ids + "," + ts
        for c in cells:
            out = out + "," + c
        return out + "\n"
    if data.layout == "long":
        out = np.full((n, t), "", dtype=object)
        for name, c in zip(data.metrics, cells, strict=True):
            out = out + ids + "," + name + "," + ts + "," + c + "\n"
        return out
    raise ValueError(f"unknown layout {data.layout!r} (expected 'wide' or 'long')")


def write_demo(data: DemoData, out_dir: Path) -> DemoSummary:
    """Write the landing files and the ground truth of a business kind under ``out_dir``.

    The landing files are written atomically (temp file + rename); files of the same names are
    overwritten, others left alone. Output is byte-identical for identical data.

    Parameters
    ----------
    data : DemoData
    out_dir : Path
        Receives ``landing/`` and the truth files (see the module docstring).

    Returns
    -------
    DemoSummary
    """
    out_dir = Path(out_dir)
    landing = out_dir / "landing"
    header = (
        "entity_id,timestamp," + ",".join(data.metrics) if data.layout == "wide" else "entity_id,metric,timestamp,value"
    ) + "\n"
    lines = _lines(data)
    keys = data.file_keys
    if (keys[1:] < keys[:-1]).any():
        raise ValueError("entities must be sorted by file key (each file holds a contiguous block)")
    change = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    bounds = list(zip(np.concatenate(([0], change)), np.concatenate((change, [len(keys)])), strict=True))
    files = 0
    for j, day in enumerate(data.dates.strftime("%Y-%m-%d")):
        folder = landing / day
        folder.mkdir(parents=True, exist_ok=True)
        for a, b in bounds:
            _write_atomic(folder / f"{keys[a]}.csv", header + "".join(lines[a:b, j]))
            files += 1

    paths = {name: out_dir / f"{name}.csv" for name in ("labels", "faults", "entities", "splits", "calendar")}
    data.labels_frame().to_csv(paths["labels"], index=False, lineterminator="\n")
    data.faults_frame().to_csv(paths["faults"], index=False, lineterminator="\n")
    data.entities.to_csv(paths["entities"], index=False, lineterminator="\n")
    data.splits_frame().to_csv(paths["splits"], index=False, lineterminator="\n")
    calendar_frame(list(data.calendar)).to_csv(paths["calendar"], index=False, lineterminator="\n")

    n, n_m, t = data.values.shape
    counts = Counter(f.fault_kind for f in data.faults)
    return DemoSummary(
        kind=data.kind,
        entities=n,
        sites=int(data.entities["site"].nunique()),
        metrics=data.metrics,
        freq="1D",
        periods=t,
        rows=n * n_m * t,
        files=files,
        faulty_entities=len({f.entity_idx for f in data.faults}),
        faults_by_kind=MappingProxyType({k: counts.get(k, 0) for k in data.fault_kinds}),
        first_timestamp=data.dates[0],
        last_timestamp=data.dates[-1],
        test_start=data.test_start,
        out_dir=out_dir,
        landing_dir=landing,
        labels_path=paths["labels"],
        faults_path=paths["faults"],
        entities_path=paths["entities"],
        splits_path=paths["splits"],
        calendar_path=paths["calendar"],
        seed=data.seed,
    )
