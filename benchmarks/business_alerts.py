"""Alerts on the business demo fleets (storage, retail): right rule, right team, no noise.

    python benchmarks/business_alerts.py                      # storage and retail, seed 7
    python benchmarks/business_alerts.py --kind retail --cache /tmp/biz   # reuse detection output
    python benchmarks/business_alerts.py --param recurrent_runs=12      # a detector setting

What runs is what the assets run, on the whole period at once (as one backfill run does):
``landing.read_file`` -> ``core.fleet.detect_days`` (public holidays of each entity's country, and
the holidays and other events of ``calendar.csv``, as the detection asset gets them) -> ``core.rules.find_hits`` /
``fold_alerts`` / ``alert_rows`` with ``configs/alert_rules.yaml``, ``configs/metric_families.yaml``,
the demo's ``entities.csv`` (prices, stores, countries) and its calendar's events.

Figures, on the alerts people would see (not ``pending`` / ``expired``):

- **faults found**: share of the injected faults (``faults.csv``; a processor-wide card outage is
  one fault per facility) with an alert on the entity whose diagnosis (``fault_kind``) is the
  fault's kind and whose team is the team routing gives that kind, open at some time in
  ``[onset, onset + 2 days]``;
- **false alerts per 100 entity-weeks**: alerts opened after their entity's reference period
  (``splits.csv``) overlapping no fault window of their entity (``[start, end + 2 days]``), per
  100 entity-weeks of that period (the alerts of the reference period are counted apart);
- **sensor wording**: alerts on a business metric (kind count, currency, ratio or stock) whose
  title or why says "sensor";
- **on known events**: alerts opened on a known event day of their entity (holidays, promotions,
  store events, closures of ``calendar.csv``; public holidays).

Results go to ``benchmarks/RESULTS.md`` (## Business alerts), never into code or docs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # detector_quality: the same loading and detection

from anomaly_assets.alert_config import load_alert_rules  # noqa: E402
from anomaly_assets.calendars import event_days, load_calendar  # noqa: E402
from anomaly_assets.config import load_metric_families  # noqa: E402
from anomaly_assets.core import rules as R  # noqa: E402
from anomaly_assets.core.detector import DetectorParams  # noqa: E402
from anomaly_assets.core.semantics import BUSINESS_KINDS  # noqa: E402
from anomaly_assets.demo.kinds import generate  # noqa: E402
from detector_quality import detect_frames, load_folder, parse_params  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WITHIN = pd.Timedelta(days=2)


def detected(kind: str, work: Path, seed: int, params: DetectorParams | None = None) -> tuple[Path, dict[str, pd.DataFrame]]:
    """Generate the demo kind into ``work/kind`` and run detection over it (cached as parquet,
    per set of detector parameters)."""
    params = params or DetectorParams()
    out = work / (kind if params == DetectorParams() else f"{kind}-{params.version('')[:8]}")
    files = {n: out / f"{n}.parquet" for n in ("decomposition", "scores", "explanations")}
    if all(f.exists() for f in files.values()) and (out / "seed").exists() and (out / "seed").read_text() == str(seed):
        return out, {n: pd.read_parquet(f) for n, f in files.items()}
    generate(kind, out, seed=seed)
    fam = load_metric_families(REPO / "configs" / "metric_families.yaml")
    # read and detected as the quality benchmark does (its holidays from entities.csv and the calendar)
    frames = detect_frames(load_folder(kind, out, out / "landing"), params, fam.families, fam.units)
    for n, f in files.items():
        frames[n].to_parquet(f)
    (out / "seed").write_text(str(seed))
    return out, frames


def alerts_for(out: Path, frames: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, R.RuleInputs, pd.DataFrame]:
    """(alerts as the alerts asset writes them, the rules' inputs, the known events)."""
    cfg = load_alert_rules(REPO / "configs" / "alert_rules.yaml")
    fam = load_metric_families(REPO / "configs" / "metric_families.yaml")
    entities = pd.read_csv(out / "entities.csv", dtype=str)
    calendar = load_calendar(out / "calendar.csv")
    dec = frames["decomposition"]
    years = range(dec.ts.min().year, dec.ts.max().year + 1)
    events = event_days(dec.entity_id.unique(), years, entities, calendar)
    register = entities.assign(tags=entities["tags"].fillna("").str.split(";"))
    inputs = R.RuleInputs(scores=frames["scores"], explanations=frames["explanations"], decomposition=dec,
                          entities=register[["entity_id", "site", "tags"]].assign(team=None),
                          families=fam.families, units=fam.units, kinds=fam.kinds,
                          attributes=entities, events=events)
    start, end = dec.ts.min(), dec.ts.max() + pd.Timedelta(days=1)
    hits = R.find_hits(cfg, inputs, start, end)
    folded = R.fold_alerts(hits, cfg)
    return R.alert_rows(folded, cfg, inputs, dec.ts.max()), inputs, events


def evaluate(out: Path, alerts: pd.DataFrame, inputs: R.RuleInputs, events: pd.DataFrame) -> dict:
    """The four figures (see the module docstring), with their details."""
    cfg = load_alert_rules(REPO / "configs" / "alert_rules.yaml")
    shown = alerts[~alerts["status"].isin(["pending", "expired"])].copy()
    for c in ("opened_at", "last_seen_at"):
        shown[c] = pd.to_datetime(shown[c], utc=True)
    faults = pd.read_csv(out / "faults.csv")
    for c in ("start", "end"):
        faults[c] = pd.to_datetime(faults[c], utc=True)
    faults["team"] = faults["fault_kind"].map(lambda k: R.team_for_fault_kind(cfg, k))
    m = faults.reset_index().merge(shown, on="entity_id", how="left", suffixes=("", "_a"))
    ok = ((m["fault_kind_a"] == m["fault_kind"]) & (m["team_a"] == m["team"])
          & (m["opened_at"] <= m["start"] + WITHIN) & (m["last_seen_at"] >= m["start"]))
    faults["found"] = faults.index.isin(m.loc[ok, "index"])
    # false: overlapping no fault window of the entity (with the same 2 days of slack)
    fm = shown.reset_index().merge(faults[["entity_id", "start", "end"]], on="entity_id", how="left")
    on_fault = fm[(fm["opened_at"] <= fm["end"] + WITHIN) & (fm["last_seen_at"] >= fm["start"])]["index"].unique()
    shown["on_fault"] = shown.index.isin(on_fault)
    splits = pd.read_csv(out / "splits.csv")
    test_start = pd.to_datetime(splits.set_index("entity_id")["test_start"], utc=True)
    in_test = shown["opened_at"] >= shown["entity_id"].map(test_start)
    last = inputs.decomposition["ts"].max()
    weeks = sum((last - pd.Timestamp(t, tz="UTC")).days + 1 for t in splits["test_start"]) / 7.0
    kinds = inputs.metric_kind
    metric = shown["evidence"].map(lambda e: json.loads(e).get("metric"))
    business = metric.map(lambda x: kinds.get(x) in BUSINESS_KINDS)
    sensor = business & (shown["why"].str.contains("sensor", flags=re.I) | shown["title"].str.contains("sensor", flags=re.I))
    ev = events[["entity_id", "day"]].drop_duplicates()
    opened_day = shown.assign(day=shown["opened_at"].dt.floor("D").astype("datetime64[us, UTC]"))
    on_event = opened_day.reset_index().merge(ev, on=["entity_id", "day"])["index"].unique()
    return {
        "faults": len(faults), "found": int(faults["found"].sum()),
        "by_kind": faults.groupby("fault_kind")["found"].agg(["sum", "count"]).astype(int),
        "alerts": len(shown), "false": int((~shown["on_fault"] & in_test).sum()), "entity_weeks": weeks,
        "reference_alerts": int((~in_test).sum()),
        "sensor_wording": int(sensor.sum()), "on_events": len(on_event),
        "by_rule": shown.groupby("rule")["on_fault"].agg(["sum", "count"]).astype(int),
        "shown": shown, "faults_frame": faults,
    }


def report(kind: str, r: dict) -> str:
    per100 = 100 * r["false"] / r["entity_weeks"] if r["entity_weeks"] else float("nan")
    lines = [f"{kind}: faults found {r['found']}/{r['faults']} ({r['found'] / max(r['faults'], 1):.0%}) "
             f"with the right rule and team within 2 days; alerts {r['alerts']}, false {r['false']} "
             f"= {per100:.2f} per 100 entity-weeks ({r['entity_weeks']:.0f}; {r['reference_alerts']} alerts "
             f"in the reference weeks, not counted); "
             f"sensor wording on business metrics {r['sensor_wording']}; on known events {r['on_events']}"]
    lines.append("  by fault kind (found/faults): " + ", ".join(
        f"{k} {row['sum']}/{row['count']}" for k, row in r["by_kind"].iterrows()))
    lines.append("  by rule (on a fault/alerts): " + ", ".join(
        f"{k} {row['sum']}/{row['count']}" for k, row in r["by_rule"].iterrows()))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kind", action="append", choices=["storage", "retail"])
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--cache", type=Path, help="folder to keep the generated fleets and detection output in")
    p.add_argument("--show", type=int, default=0, help="print this many alerts of each kind, worst value first")
    p.add_argument("--param", action="append", default=[], help="DetectorParams field=value (e.g. recurrent_runs=12)")
    a = p.parse_args(argv)
    params = parse_params(a.param)
    work = a.cache or Path(tempfile.mkdtemp(prefix="business-alerts-"))
    for kind in a.kind or ["storage", "retail"]:
        t = time.perf_counter()
        out, frames = detected(kind, work, a.seed, params)
        alerts, inputs, events = alerts_for(out, frames)
        r = evaluate(out, alerts, inputs, events)
        print(report(kind, r) + f"\n  ({time.perf_counter() - t:.0f} s)")
        if a.show:
            s = r["shown"].sort_values("value_at_risk", ascending=False, na_position="last").head(a.show)
            for row in s.itertuples():
                print(f"  [{row.rule} -> {row.team}; {'fault' if row.on_fault else 'FALSE'}] {row.title}: {row.why}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
