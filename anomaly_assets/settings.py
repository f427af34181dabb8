"""Where things live, from the environment (read once when definitions load).

Everything defaults to one data folder, ``data/`` (``ANOMALY_DATA_DIR``), so that the demo, the
shell, ``dagster dev`` and the analysts all find the same files with no other setting::

    data/landing/             the landing folder (ANOMALY_LANDING_DIR)
    data/warehouse.duckdb     the warehouse (ANOMALY_WAREHOUSE); models/ and analytics.duckdb beside it
    data/labels.csv           labels, used when present (ANOMALY_LABELS)
    data/entities.csv         the entity register, used when present (ANOMALY_ENTITIES)

The daily partitions start on the first day of data the shell has backfilled, recorded beside
the warehouse (:func:`record_first_day`), unless ``ANOMALY_PARTITION_START`` says otherwise.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# The first partition when nothing is recorded and ANOMALY_PARTITION_START is unset.
DEFAULT_PARTITION_START = "2013-01-01"


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
    data_dir: Path = Path("data").resolve()
    # whether partition_start came from ANOMALY_PARTITION_START (else: recorded or the default)
    partition_start_from_env: bool = False
    # a copy of the environment load_settings read, for what reads more of it later (the alert
    # rulebook: ANOMALY_ALERT_RULES, ANOMALY_ENTITIES, ANOMALY_CALENDAR); None (settings made by
    # hand): os.environ when the rulebook is built
    environ: dict[str, str] | None = field(default=None, repr=False, compare=False)

    @property
    def model_dir(self) -> Path:
        return self.warehouse.parent / "models"

    @property
    def report_dir(self) -> Path:
        """Daily reports (``reports/daily``, ``anomaly-assets report``): beside the warehouse."""
        return self.warehouse.parent / "reports"

    @property
    def entities(self) -> Path | None:
        """``entities.csv`` in the data folder, when there is one (else configs/entities.yaml applies)."""
        p = self.data_dir / "entities.csv"
        return p if p.is_file() else None


def first_day_record(warehouse: Path) -> Path:
    """The file beside ``warehouse`` that records the first day of its partitions."""
    return warehouse.with_name(warehouse.stem + ".partitions.json")


def recorded_first_day(warehouse: Path) -> str | None:
    """The first partition day recorded for ``warehouse`` (YYYY-MM-DD), or None."""
    path = first_day_record(warehouse)
    try:
        day = json.loads(path.read_text())["first_day"]
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: expected {{\"first_day\": \"YYYY-MM-DD\"}}, found unreadable content ({e})") from None
    import datetime as dt

    try:
        return dt.date.fromisoformat(day).isoformat()
    except (TypeError, ValueError):
        raise ValueError(f"{path}: first_day {day!r} is not a date (expected YYYY-MM-DD)") from None


def record_first_day(warehouse: Path, day: str) -> None:
    """Record ``day`` as the first partition of ``warehouse`` (written atomically)."""
    path = first_day_record(warehouse)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"first_day": day,
                               "why": "the first day of data backfilled into this warehouse: the daily "
                                      "partitions start here (ANOMALY_PARTITION_START overrides it)"}, indent=2) + "\n")
    os.replace(tmp, path)


def load_settings(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)

    def path(name: str, default: str | Path | None) -> Path | None:
        value = env.get(name) or default
        return Path(value).expanduser().resolve() if value else None

    data = path("ANOMALY_DATA_DIR", "data")
    labels = path("ANOMALY_LABELS", None)
    if labels is None and (data / "labels.csv").is_file():
        labels = data / "labels.csv"
    splits = path("ANOMALY_SPLITS", None)
    if splits is None and labels is not None and (labels.parent / "splits.csv").exists():
        splits = labels.parent / "splits.csv"
    warehouse = path("ANOMALY_WAREHOUSE", data / "warehouse.duckdb")
    start = env.get("ANOMALY_PARTITION_START", "").strip()
    return Settings(
        landing_dir=path("ANOMALY_LANDING_DIR", data / "landing"),
        warehouse=warehouse,
        labels=labels,
        splits=splits,
        partition_start=start or recorded_first_day(warehouse) or DEFAULT_PARTITION_START,
        sql_dir=path("ANOMALY_ASSETS_SQL_DIR", str(REPO_ROOT / "dbt_like_sql")),
        families=path("ANOMALY_METRIC_FAMILIES", str(REPO_ROOT / "configs" / "metric_families.yaml")),
        # the read-only copy analysts query; beside the warehouse unless set
        analyst_copy=path("ANOMALY_ANALYST_COPY", None) or warehouse.parent / "analytics.duckdb",
        expectations=path("ANOMALY_EXPECTATIONS", str(REPO_ROOT / "configs" / "expectations.yaml")),
        duckdb_memory=env.get("ANOMALY_DUCKDB_MEMORY", "1GB"),
        data_dir=data,
        partition_start_from_env=bool(start),
        environ=env,
    )
