"""Where things live, from the environment (read once when definitions load)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Settings:
    landing_dir: Path
    warehouse: Path
    labels: Path | None
    splits: Path | None
    partition_start: str
    sql_dir: Path
    families: Path
    analyst_copy: Path
    expectations: Path
    # DuckDB caches what it reads up to its memory limit (default 80% of RAM): a fleet read in
    # chunks would otherwise fill memory with cached blocks.
    duckdb_memory: str = "1GB"

    @property
    def model_dir(self) -> Path:
        return self.warehouse.parent / "models"


def load_settings(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)

    def path(name: str, default: str | None) -> Path | None:
        value = env.get(name) or default
        return Path(value).expanduser().resolve() if value else None

    labels = path("ANOMALY_LABELS", None)
    splits = path("ANOMALY_SPLITS", None)
    if splits is None and labels is not None and (labels.parent / "splits.csv").exists():
        splits = labels.parent / "splits.csv"
    warehouse = path("ANOMALY_WAREHOUSE", "data/warehouse.duckdb")
    return Settings(
        landing_dir=path("ANOMALY_LANDING_DIR", "data/landing"),
        warehouse=warehouse,
        labels=labels,
        splits=splits,
        partition_start=env.get("ANOMALY_PARTITION_START", "2013-01-01"),
        sql_dir=path("ANOMALY_ASSETS_SQL_DIR", str(REPO_ROOT / "dbt_like_sql")),
        families=path("ANOMALY_METRIC_FAMILIES", str(REPO_ROOT / "configs" / "metric_families.yaml")),
        # the read-only copy analysts query; beside the warehouse unless set
        analyst_copy=path("ANOMALY_ANALYST_COPY", None) or warehouse.parent / "analytics.duckdb",
        expectations=path("ANOMALY_EXPECTATIONS", str(REPO_ROOT / "configs" / "expectations.yaml")),
        duckdb_memory=env.get("ANOMALY_DUCKDB_MEMORY", "1GB"),
    )
