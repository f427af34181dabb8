"""The pump fleet's metrics and what the generator returns: the faults it injected, the fleet in
memory (:class:`FleetData`) and a summary of the files it wrote (:class:`FleetSummary`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from anomaly_assets.demo.dataset import iso

METRICS: tuple[str, ...] = ("bearing_temp_c", "vibration_mm_s", "voltage_v", "current_a")
FAULT_KINDS: tuple[str, ...] = (
    "bearing_wear",
    "overheating",
    "power_spike",
    "stuck_sensor",
    "level_shift",
)
CSV_HEADER = "entity_id,timestamp," + ",".join(METRICS) + "\n"
_DAY_S = 86_400


@dataclass(frozen=True)
class Fault:
    """One injected, labeled fault window (inclusive sample indices)."""

    entity_id: str
    fault_kind: str
    start: pd.Timestamp
    end: pd.Timestamp
    metrics: tuple[str, ...]
    entity_idx: int
    start_idx: int
    end_idx: int


@dataclass(frozen=True, eq=False)
class FleetData:
    """The simulated fleet in memory.

    ``values[i, m, t]`` is metric ``METRICS[m]`` of entity ``entity_ids[i]``
    at ``timestamps[t]``, already rounded to the 3 decimals written to CSV.
    ``clean`` is the same fleet without faults (only if requested).
    """

    entity_ids: np.ndarray
    sites: np.ndarray
    models: np.ndarray
    tags: np.ndarray
    timestamps: pd.DatetimeIndex
    values: np.ndarray
    faults: tuple[Fault, ...]
    freq: str
    step_seconds: int
    seed: int
    clean: np.ndarray | None = None

    @property
    def periods_per_day(self) -> int:
        return _DAY_S // self.step_seconds

    def entities_frame(self) -> pd.DataFrame:
        """``entity_id,site,model,tags``."""
        return pd.DataFrame(
            {"entity_id": self.entity_ids, "site": self.sites, "model": self.models, "tags": self.tags}
        )

    def faults_frame(self) -> pd.DataFrame:
        """``entity_id,fault_kind,start,end,metrics`` (ISO ``Z`` strings)."""
        return pd.DataFrame(
            {
                "entity_id": [f.entity_id for f in self.faults],
                "fault_kind": [f.fault_kind for f in self.faults],
                "start": [iso(f.start) for f in self.faults],
                "end": [iso(f.end) for f in self.faults],
                "metrics": [";".join(f.metrics) for f in self.faults],
            },
            columns=["entity_id", "fault_kind", "start", "end", "metrics"],
        )

    def labels_frame(self) -> pd.DataFrame:
        """``entity_id,start,end,metrics`` (the standard label format)."""
        return self.faults_frame().drop(columns="fault_kind")

    def label_mask(self) -> np.ndarray:
        """Boolean ``(entities, periods)`` mask of labeled points."""
        mask = np.zeros((self.values.shape[0], self.values.shape[2]), dtype=bool)
        for f in self.faults:
            mask[f.entity_idx, f.start_idx : f.end_idx + 1] = True
        return mask

    def to_wide(self) -> pd.DataFrame:
        """All rows in the CSV layout (entity-major, then time)."""
        n, m, t = self.values.shape
        df = pd.DataFrame(self.values.transpose(0, 2, 1).reshape(n * t, m), columns=list(METRICS))
        df.insert(0, "timestamp", np.tile(self.timestamps.to_numpy(), n))
        df.insert(0, "entity_id", np.repeat(self.entity_ids, t))
        return df


@dataclass(frozen=True)
class FleetSummary:
    """What :func:`generate_fleet` wrote.

    ``rows`` counts observations in long format
    (``entities x metrics x periods``); ``csv_rows`` counts the wide CSV data
    rows (``entities x periods``).  ``faults_by_kind`` counts label windows
    (a ``power_spike`` incident has several).
    """

    entities: int
    sites: int
    metrics: tuple[str, ...]
    freq: str
    periods: int
    rows: int
    csv_rows: int
    files: int
    faulty_entities: int
    faults_by_kind: Mapping[str, int] = field(hash=False)
    first_timestamp: pd.Timestamp
    last_timestamp: pd.Timestamp
    landing_dir: Path
    labels_path: Path
    faults_path: Path
    entities_path: Path
    seed: int

    @property
    def label_windows(self) -> int:
        return sum(self.faults_by_kind.values())
