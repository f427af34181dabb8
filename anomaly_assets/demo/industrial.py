"""The industrial kind: the pump fleet of :mod:`anomaly_assets.demo.fleet`, with every kind's files.

The landing folder, ``labels.csv`` and ``faults.csv`` are exactly what
:func:`~anomaly_assets.demo.fleet.generate_fleet` writes for the same arguments; this adds the
columns and files the business kinds have: ``country`` and ``region`` in ``entities.csv`` (a
site's, assigned round-robin, no effect on the signals) and ``splits.csv`` (the first
``HISTORY_DAYS`` are the fault-free reference).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from anomaly_assets.demo.dataset import DemoSummary, iso
from anomaly_assets.demo.fleet import FAULT_KINDS, HISTORY_DAYS, generate_fleet

__all__ = ["FAULT_KINDS", "REFERENCE_DAYS", "SITE_REGIONS", "generate"]

REFERENCE_DAYS = HISTORY_DAYS
SITE_REGIONS = (("US-TX", "US"), ("US-OH", "US"), ("CA-AB", "CA"), ("GB-SCT", "GB"))


def generate(
    out_dir: Path, *, seed: int = 7, entities: int = 200, days: int = 35, freq: str = "1h", start: str = "2026-09-07"
) -> DemoSummary:
    """Write the pump fleet under ``out_dir`` (``landing/`` replaced) and return what was written.

    Parameters
    ----------
    out_dir : Path
        Receives ``landing/<YYYY-MM-DD>/<site>.csv`` and ``labels.csv``, ``faults.csv``,
        ``entities.csv``, ``splits.csv``.
    seed, entities, days, freq, start
        As :func:`~anomaly_assets.demo.fleet.simulate_fleet`.

    Returns
    -------
    DemoSummary
    """
    out_dir = Path(out_dir)
    landing = out_dir / "landing"
    if landing.exists():
        shutil.rmtree(landing)
    s = generate_fleet(landing, entities=entities, days=days, freq=freq, start=start, seed=seed,
                       labels_path=out_dir / "labels.csv", entities_path=out_dir / "entities.csv")
    ent = pd.read_csv(s.entities_path, dtype=str, keep_default_na=False)
    site_no = ent["site"].str.extract(r"(\d+)$", expand=False).astype(int) - 1
    ent["country"] = [SITE_REGIONS[k % len(SITE_REGIONS)][1] for k in site_no]
    ent["region"] = [SITE_REGIONS[k % len(SITE_REGIONS)][0] for k in site_no]
    ent.to_csv(s.entities_path, index=False, lineterminator="\n")
    test_start = s.first_timestamp + pd.Timedelta(days=REFERENCE_DAYS)
    splits_path = out_dir / "splits.csv"
    pd.DataFrame({"entity_id": ent["entity_id"], "test_start": iso(test_start)}).to_csv(
        splits_path, index=False, lineterminator="\n")
    return DemoSummary(
        kind="industrial", entities=s.entities, sites=s.sites, metrics=s.metrics, freq=s.freq, periods=s.periods,
        rows=s.rows, files=s.files, faulty_entities=s.faulty_entities, faults_by_kind=s.faults_by_kind,
        first_timestamp=s.first_timestamp, last_timestamp=s.last_timestamp, test_start=test_start, out_dir=out_dir,
        landing_dir=landing, labels_path=s.labels_path, faults_path=s.faults_path, entities_path=s.entities_path,
        splits_path=splits_path, calendar_path=None, seed=seed,
    )
