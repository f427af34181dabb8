"""Detection quality of the core (no Dagster, no DuckDB) on the shared labeled data.

    python benchmarks/detector_quality.py --dataset smd --dataset asd [--entities machine-1-6]

Runs exactly what the assets run (landing.read_file -> fleet.decompose_days -> fit_fleet ->
score_day, one day at a time, causally) and prints point-wise best-F1 (no point-adjust), AUC-PR
and HitRate@100/150 % of the explanations, on the test period from splits.csv, per entity and as
the mean over entities. Nothing here is tuned per file: parameters are the package defaults unless
given with --param key=value.

HitRate ranks the metrics the way the explanations do (core/explain.py: recent deviation, the
detector's smoothing, warm-up included, exactly as fleet.score_day) at every labeled point with
root-cause metrics (``hit100``/``hit150``), and separately at the labeled points the detector
flagged (``hit100_flagged``/``hit150_flagged``: the points that get an explanation in the product).
``--ranking point`` ranks by each point's own |deviation| instead (the earlier explanations).
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
from anomaly_assets.core.detect import severity  # noqa: E402
from anomaly_assets.core.explain import rank_metrics, smoothed_deviation  # noqa: E402
from anomaly_assets.core.fleet import (  # noqa: E402
    DAY, DecompositionParams, DetectorParams, _wide, days_in, decompose_days, fit_fleet, score_day,
)
from anomaly_assets.landing import discover_files, read_file, read_labels  # noqa: E402

SIDECARS = {"labels.csv", "splits.csv"}

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def run_entity(obs, labels, test_start, dparams, mparams, ranking="recent"):
    days = days_in(obs.ts.min().floor("D"), obs.ts.max().floor("D") + DAY)
    dec = decompose_days(obs, days, dparams)
    scores, models = [], {}
    score_from = (test_start or obs.ts.min()).floor("D")
    for d in days:
        if d < score_from:
            continue
        model = models[d] = fit_fleet(dec, d, mparams)
        lo = d - pd.Timedelta(days=max(1, mparams.warmup_points * 60 / 86400 + 1))
        s, _ = score_day(dec[(dec.ts >= lo) & (dec.ts < d + DAY)], model)
        scores.append(s)
    s = pd.concat([x for x in scores if len(x)]).sort_values("ts")  # a day with no rows scores nothing
    if test_start is not None:
        s = s[s.ts >= test_start]
    ts = s.ts.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
    windows = [(r.start.tz_localize(None), r.end.tz_localize(None)) for r in labels.itertuples()]
    y = evaluate.label_mask(ts, windows)
    score = s.anomaly_score.fillna(0).to_numpy()
    bf = evaluate.best_f1(y, score)
    ap = evaluate.average_precision(y, score)
    # HitRate: rank metrics as the explanations do, at every labeled point with root-cause metrics.
    rc = labels[labels.metrics.map(len) > 0]
    ranked_all, truth_all, flagged_all = [], [], []
    if len(rc) and len(set(dec.metric)) > 1:
        scored = set(s.ts)
        for d in sorted({t.floor("D") for t in scored if any((t >= r.start) & (t <= r.end) for r in rc.itertuples())}):
            model = models.get(d)
            entity = rc.entity_id.iloc[0]
            if model is None or entity not in model.detectors:
                continue
            metrics, det = model.detectors[entity]
            rows = dec[(dec.ts >= d - pd.Timedelta(days=max(1, mparams.warmup_points * 60 / 86400 + 1)))
                       & (dec.ts < d + DAY)]
            v = _wide(rows, "value").reindex(columns=metrics)
            z = _wide(rows, "residual_z").reindex(index=v.index, columns=metrics)
            first = int(np.argmax(v.index >= d))
            lo = max(0, first - mparams.warmup_points)  # the context fleet.score_day uses
            v, z = v.iloc[lo:], z.iloc[lo:]
            parts = det.score_parts(v.to_numpy(), z.to_numpy())
            mag = (smoothed_deviation(parts.deviation, mparams.smoothing_alphas[0]) if ranking == "recent"
                   else np.abs(parts.deviation))
            flagged = severity(parts.anomaly_score, mparams.warning_p, mparams.critical_p) != "normal"
            idx = v.index
            for r in rc.itertuples():
                sel = (idx >= d) & (idx >= r.start) & (idx <= r.end) & idx.isin(scored)
                if not sel.any():
                    continue
                order = rank_metrics(mag[sel])
                ranked_all += [[metrics[j] for j in row] for row in order]
                truth_all += [set(r.metrics)] * int(sel.sum())
                flagged_all += list(flagged[sel])
    hr = {}
    fl = np.asarray(flagged_all, bool)
    for p in (1.0, 1.5):
        if ranked_all:
            hr[p] = evaluate.hit_rate(ranked_all, truth_all, p)
        if fl.any():
            hr[("flagged", p)] = evaluate.hit_rate([x for x, f in zip(ranked_all, fl) if f],
                                                   [x for x, f in zip(truth_all, fl) if f], p)
    return dict(best_f1=bf.f1, auc_pr=ap, points=len(s), labeled=int(y.sum()),
                hit100=hr.get(1.0, np.nan), hit150=hr.get(1.5, np.nan),
                hit100_flagged=hr.get(("flagged", 1.0), np.nan), hit150_flagged=hr.get(("flagged", 1.5), np.nan),
                rc_points=len(ranked_all), rc_flagged=int(fl.sum()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", action="append", default=[], help="smd, asd, nab/realKnownCause ...")
    ap.add_argument("--entities", nargs="*", default=None)
    ap.add_argument("--param", action="append", default=[], help="DetectorParams/DecompositionParams field=value")
    ap.add_argument("--ranking", choices=["recent", "point"], default="recent",
                    help="explanation ranking: recent deviation (the product's) or the point's own |deviation|")
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
            r = run_entity(obs, labels[labels.entity_id == entity], test_start, dparams, mparams, a.ranking)
            r.update(entity=entity, seconds=round(time.perf_counter() - t0, 1))
            rows.append(r)
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
        df = pd.DataFrame(rows)
        print(f"{ds}: mean over {len(df)} entities  best_f1={df.best_f1.mean():.3f}  auc_pr={df.auc_pr.mean():.3f}  "
              f"hit@100={df.hit100.mean():.3f}  hit@150={df.hit150.mean():.3f}  "
              f"flagged: hit@100={df.hit100_flagged.mean():.3f}  hit@150={df.hit150_flagged.mean():.3f}  "
              f"({df.seconds.sum():.0f} s)", flush=True)


if __name__ == "__main__":
    main()
