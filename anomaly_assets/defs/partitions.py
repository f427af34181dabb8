"""Daily partitions (UTC). The first day is ANOMALY_PARTITION_START; the last is yesterday."""

import dagster as dg

from anomaly_assets.settings import load_settings

daily_partitions = dg.DailyPartitionsDefinition(start_date=load_settings().partition_start, timezone="UTC")
