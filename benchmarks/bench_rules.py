"""How long the retail count rules take on a large store fleet, as one nightly alerts run sees it.

    python benchmarks/bench_rules.py --skus 20000                 # the days the rules read back
    python benchmarks/bench_rules.py --skus 20000 --days 89       # a fixed history
    PYTHONPATH=/tmp/old python benchmarks/bench_rules.py ...      # another commit, side by side

A synthetic fleet of ``--skus`` store-SKUs (units sold negative-binomial around 6 a day, the stock
sold down and restocked every 60 units, stockouts included) over ``--days`` days, by default
``defs.alerts.rule_lookback`` (what the alerts asset reads for them). Times
``core.rules.find_hits`` of ``ghost_stock``, ``sales_drop`` and ``unplanned_spike`` of
``configs/alert_rules.yaml`` for the last day: medians of ``--repeat`` runs.

Results go to ``benchmarks/RESULTS.md`` (## Scale), never into code or docs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.append(str(Path(__file__).resolve().parents[1]))  # PYTHONPATH first: another commit's code

from anomaly_assets.alert_config import load_alert_rules  # noqa: E402
from anomaly_assets.core import rules as R  # noqa: E402

RULES = ("ghost_stock", "sales_drop", "unplanned_spike")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skus", type=int, default=20_000)
    ap.add_argument("--days", type=int, default=None, help="default: what the alerts asset reads back")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    import anomaly_assets

    root = Path(anomaly_assets.__file__).resolve().parents[1]
    cfg = load_alert_rules(root / "configs" / "alert_rules.yaml")
    cfg = cfg.model_copy(update={"rules": [r for r in cfg.rules if r.name in RULES]})
    if a.days is None:
        from anomaly_assets.defs.alerts import rule_lookback

        a.days = rule_lookback(cfg).days
    rng = np.random.default_rng(0)
    days = pd.date_range("2026-01-01", periods=a.days, freq="D", tz="UTC")
    sold = rng.negative_binomial(4.0, 0.4, (a.skus, a.days)).astype(float)
    stock = np.maximum(0.0, 60.0 - np.cumsum(sold, axis=1) % 60.0)
    ids = np.array([f"S{i // 25:04d}-SKU{i % 25:02d}" for i in range(a.skus)])
    dec = pd.concat([pd.DataFrame({"entity_id": np.repeat(ids, a.days), "metric": m, "ts": np.tile(days, a.skus),
                                   "value": v.ravel(), "expected": x.ravel()})
                     for m, v, x in (("units_sold", sold, np.full(sold.shape, 5.0)), ("on_hand", stock, stock))],
                    ignore_index=True)
    dec = dec.assign(residual=dec["value"] - dec["expected"], residual_z=(dec["value"] - dec["expected"]) / 2.5)
    scores = dec[["entity_id", "ts"]].drop_duplicates().assign(anomaly_score=0.0, is_anomaly=False, severity="normal")
    inputs = R.RuleInputs(scores=scores, explanations=pd.DataFrame(columns=["entity_id", "ts", "metric"]),
                          decomposition=dec)
    runs = []
    for _ in range(a.repeat):
        t = time.perf_counter()
        hits = R.find_hits(cfg, inputs, days[-1], days[-1] + pd.Timedelta(days=1))
        runs.append(time.perf_counter() - t)
    print(f"{a.skus} SKUs x {a.days} days ({len(dec):,} rows; code at {root}): find_hits for the last day "
          f"median {statistics.median(runs):.2f} s of {a.repeat}, {len(hits)} hits")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
