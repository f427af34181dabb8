"""Detection quality of the core (no Dagster, no DuckDB) on the shared labeled data.

    python benchmarks/detector_quality.py --dataset smd --dataset asd [--entities machine-1-6]

Runs exactly what the assets run (landing.read_file -> fleet.decompose_days -> fit_fleet ->
score_day, one day at a time, causally) and prints point-wise best-F1 (no point-adjust), AUC-PR
and HitRate@100/150 % of the explanations, on the test period from splits.csv, per entity and as
the mean over entities. Nothing here is tuned per file: parameters are the package defaults unless
given with --param key=value.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anomaly_assets.core import evaluate  # noqa: E402
from anomaly_assets.core.explain import rank_metrics  # noqa: E402
from anomaly_assets.core.fleet import (  # noqa: E402
    DAY, DecompositionParams, DetectorParams, days_in, decompose_days, fit_fleet, score_day,
)
from anomaly_assets.landing import discover_files, read_file, read_labels  # noqa: E402

SIDECARS = {"labels.csv", "splits.csv"}

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def run_entity(obs, labels, test_start, dparams, mparams):
    days = days_in(obs.ts.min().floor("D"), obs.ts.max().floor("D") + DAY)
    dec = decompose_days(obs, days, dparams)
    scores, hits = [], {1.0: [], 1.5: []}
    score_from = (test_start or obs.ts.min()).floor("D")
    for d in days:
        if d < score_from:
            continue
        model = fit_fleet(dec, d, mparams)
        lo = d - pd.Timedelta(days=max(1, mparams.warmup_points * 60 / 86400 + 1))
        s, _ = score_day(dec[(dec.ts >= lo) & (dec.ts < d + DAY)], model)
        scores.append(s)
    s = pd.concat(scores).sort_values("ts")
    if test_start is not None:
        s = s[s.ts >= test_start]
    ts = s.ts.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
    windows = [(r.start.tz_localize(None), r.end.tz_localize(None)) for r in labels.itertuples()]
    y = evaluate.label_mask(ts, windows)
    score = s.anomaly_score.fillna(0).to_numpy()
    bf = evaluate.best_f1(y, score)
    ap = evaluate.average_precision(y, score)
    # HitRate: rank metrics by the detector's per-point deviation on labeled points.
    rc = labels[labels.metrics.map(len) > 0]
    if len(rc) and len(set(dec.metric)) > 1:
        lab_pts = dec.merge(s[["entity_id", "ts"]], on=["entity_id", "ts"])
        for r in rc.itertuples():
            pts = lab_pts[(lab_pts.ts >= r.start) & (lab_pts.ts <= r.end)]
            if pts.empty:
                continue
            for d, g in pts.groupby(pts.ts.dt.floor("D")):
                model = fit_fleet(dec, d, mparams)
                if r.entity_id not in model.detectors:
                    continue
                metrics, det = model.detectors[r.entity_id]
                v = g.pivot_table(index="ts", columns="metric", values="value").reindex(columns=metrics)
                z = g.pivot_table(index="ts", columns="metric", values="residual_z").reindex(columns=metrics)
                dev = det.score_parts(v.to_numpy(), z.to_numpy()).deviation
                order = rank_metrics(dev)
                ranked = [[metrics[j] for j in row] for row in order]
                for p in hits:
                    hits[p].append((ranked, [set(r.metrics)] * len(ranked)))
    hr = {}
    for p, parts in hits.items():
        if parts:
            ranked = [x for a, _ in parts for x in a]
            truth = [x for _, b in parts for x in b]
            hr[p] = evaluate.hit_rate(ranked, truth, p)
    return dict(best_f1=bf.f1, auc_pr=ap, points=len(s), labeled=int(y.sum()),
                hit100=hr.get(1.0, np.nan), hit150=hr.get(1.5, np.nan))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", action="append", default=[], help="smd, asd, nab/realKnownCause ...")
    ap.add_argument("--entities", nargs="*", default=None)
    ap.add_argument("--param", action="append", default=[], help="DetectorParams/DecompositionParams field=value")
    a = ap.parse_args(argv)
    dkw, mkw = {}, {}
    for kv in a.param:
        k, v = kv.split("=", 1)
        (dkw if k in DecompositionParams.__dataclass_fields__ else mkw)[k] = json.loads(v)
    dparams, mparams = DecompositionParams(**dkw), DetectorParams(**mkw)
    for ds in a.dataset or ["smd", "asd"]:
        root = SHARED / ds
        labels = read_labels(root / "labels.csv") if (root / "labels.csv").exists() else read_labels(root.parent / "labels.csv")
        splits = pd.read_csv(root / "splits.csv") if (root / "splits.csv").exists() else None
        rows = []
        for f in discover_files(root):
            t0 = time.perf_counter()
            if f.name in SIDECARS:
                continue
            obs = read_file(f, root=root).observations
            entity = obs.entity_id.iloc[0]
            if a.entities and entity not in a.entities:
                continue
            test_start = None
            if splits is not None:
                test_start = pd.Timestamp(splits.set_index("entity_id").test_start[entity], tz="UTC")
            r = run_entity(obs, labels[labels.entity_id == entity], test_start, dparams, mparams)
            r.update(entity=entity, seconds=round(time.perf_counter() - t0, 1))
            rows.append(r)
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
        df = pd.DataFrame(rows)
        print(f"{ds}: mean over {len(df)} entities  best_f1={df.best_f1.mean():.3f}  auc_pr={df.auc_pr.mean():.3f}  "
              f"hit@100={df.hit100.mean():.3f}  hit@150={df.hit150.mean():.3f}  ({df.seconds.sum():.0f} s)", flush=True)


if __name__ == "__main__":
    main()
