"""Resources: configured once in definitions.py, never constructed inside assets."""


from pathlib import Path

from typing import Optional

import dagster as dg
import pandas as pd

from anomaly_assets.config import MetricFamilies, load_metric_families
from anomaly_assets.expectations import ExpectationRules, load_expectations


class LandingFolder(dg.ConfigurableResource):
    """The landing folder the ingest reads, plus the optional labels and test split files."""

    path: str
    labels: Optional[str] = None
    splits: Optional[str] = None

    @property
    def root(self) -> Path:
        return Path(self.path)

    def sidecars(self) -> set[Path]:
        """Files in the landing folder that are not telemetry (labels, splits)."""
        names = {self.root / "labels.csv", self.root / "splits.csv"}
        names |= {Path(p).resolve() for p in (self.labels, self.splits) if p}
        return {p.resolve() for p in names}


class ModelStore(dg.ConfigurableResource):
    """Where each day's fitted per-series parameters are kept: one Parquet file per day and model
    version (level, scale, band, calendar components of every series). Parquet holds data only:
    reading an artifact never runs code, whoever could write the folder."""

    path: str

    def artifact(self, day: str, version: str) -> Path:
        return Path(self.path) / f"{day}_{version}.parquet"

    def save(self, frame: pd.DataFrame, day: str, version: str) -> Path:
        target = self.artifact(day, version)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(target)  # atomic: a reader never sees half a file
        return target

    def load(self, path: str) -> pd.DataFrame:
        return pd.read_parquet(path)


class MetricCatalog(dg.ConfigurableResource):
    """Metric families and units (configs/metric_families.yaml), validated when loaded."""

    path: Optional[str] = None

    def load(self) -> MetricFamilies:
        return load_metric_families(Path(self.path) if self.path else None)


class DataExpectations(dg.ConfigurableResource):
    """The rules the asset checks apply (configs/expectations.yaml), validated when loaded."""

    path: Optional[str] = None

    def load(self) -> ExpectationRules:
        return load_expectations(Path(self.path) if self.path else None)


class AnalystCopy(dg.ConfigurableResource):
    """The read-only copy of the warehouse that analysts query (ANOMALY_ANALYST_COPY)."""

    path: str

    @property
    def target(self) -> Path:
        return Path(self.path)
