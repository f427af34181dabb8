"""Resources: configured once in definitions.py, never constructed inside assets."""


from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import dagster as dg
import pandas as pd
from dagster_duckdb import DuckDBResource

from anomaly_assets import warehouse_lock
from anomaly_assets.config import MetricFamilies, load_metric_families
from anomaly_assets.expectations import ExpectationRules, load_expectations


class Warehouse(DuckDBResource):
    """The DuckDB warehouse (``DuckDBResource``), waiting for the file while another process holds it.

    ``dagster_duckdb`` retries a held file ~10 times over ~100 s without a word, then fails the
    step; here the step logs who holds the file (PID, command, for how long) and how long it has
    waited, every 15 s, and fails after ``lock_wait_seconds`` naming the holder
    (:mod:`anomaly_assets.warehouse_lock`).
    """

    lock_wait_seconds: float = 600.0

    @contextmanager
    def get_connection(self):
        config = {"custom_user_agent": "dagster", **self.connection_config}
        con = warehouse_lock.connect(self.database, config=config, wait_s=self.lock_wait_seconds,
                                     log=dg.get_dagster_logger().warning)
        try:
            yield con
        finally:
            con.close()


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
    version (level, scale, band and calendar components of every series). Parquet holds data
    only, and only files inside this folder are loaded, whatever path ``ml.model_versions`` holds:
    writing the warehouse or the folder cannot run code."""

    path: str

    def artifact(self, day: str, version: str) -> Path:
        return Path(self.path) / f"{day}_{version}.parquet"

    def save(self, frame: pd.DataFrame, day: str, version: str) -> Path:
        target = self.artifact(day, version)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(target)  # atomic: a reader never sees half a file
        return target

    def state_path(self, day: str, version: str) -> Path:
        return Path(self.path) / "state" / f"{day}_{version}.parquet"

    def save_state(self, table, day: str, version: str) -> Path:
        """Every series' model at the end of ``day`` (``core/model.py``'s rows), atomically."""
        import pyarrow.parquet as pq

        target = self.state_path(day, version)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        pq.write_table(table, tmp)
        tmp.replace(target)
        return target

    def load_state(self, day: str, version: str):
        """The models at the end of ``day`` for this detector version, or None if none were kept."""
        import pyarrow.parquet as pq

        path = self.state_path(day, version)
        if not path.exists():
            return None
        try:
            return pq.read_table(path)
        except Exception as e:  # a truncated or foreign file: say which, and how to recover
            raise ValueError(f"model state {path} cannot be read ({type(e).__name__}: {e}); delete it and the "
                             "series it holds are refitted from their history") from e

    def load(self, path: str) -> pd.DataFrame:
        """The parameters in ``path``, which must be a ``.parquet`` artifact inside this store."""
        p, root = Path(path).resolve(), Path(self.path).resolve()
        if root not in p.parents:
            raise ValueError(f"model artifact {path} is not inside the model store {root}: not loaded")
        if p.suffix != ".parquet":
            raise ValueError(f"model artifact {path} is not a .parquet artifact (older .joblib/.npz models are "
                             "not loaded): materialize the detection for its day again")
        return pd.read_parquet(p)


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
