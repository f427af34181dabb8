"""The reference baselines on the shared data (train-standardized L2 norm, PCA error, |z| root-cause ranking).

    python benchmarks/experiments/baselines.py
"""
import sys
from pathlib import Path
import numpy as np, pandas as pd
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from anomaly_assets.core import evaluate
from anomaly_assets.landing import discover_files, read_file, read_labels
from sklearn.decomposition import PCA

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
for ds in ["smd", "asd"]:
    root = SHARED / ds
    labels = read_labels(root / "labels.csv"); splits = pd.read_csv(root / "splits.csv").set_index("entity_id").test_start
    res = []
    hr = {1.0: [], 1.5: []}
    pooled = {}
    for f in discover_files(root):
        if f.name in ("labels.csv", "splits.csv"):
            continue
        obs = read_file(f, root=root).observations
        e = obs.entity_id.iloc[0]
        W = obs.pivot(index="ts", columns="metric", values="value").sort_index()
        ts0 = pd.Timestamp(splits[e], tz="UTC")
        tr, te = W[W.index < ts0], W[W.index >= ts0]
        mu, sd = tr.mean(), tr.std().replace(0, 1).fillna(1)
        ztr, zte = ((tr - mu) / sd).fillna(0).values, ((te - mu) / sd).fillna(0).values
        lab = labels[labels.entity_id == e]
        y = evaluate.label_mask(te.index.tz_localize(None).to_numpy(), [(r.start.tz_localize(None), r.end.tz_localize(None)) for r in lab.itertuples()])
        l2 = np.sqrt((zte ** 2).sum(1))
        p = PCA(n_components=0.9, svd_solver="full").fit(ztr)
        pe = ((zte - p.inverse_transform(p.transform(zte))) ** 2).sum(1)
        res.append((e, evaluate.best_f1(y, l2).f1, evaluate.best_f1(y, pe).f1))
        ranked_all, truth_all = [], []
        for r in lab[lab.metrics.map(len) > 0].itertuples():
            sel = (te.index >= r.start) & (te.index <= r.end)
            order = np.argsort(-np.abs(zte[sel]), axis=1, kind="stable")
            ranked_all += [[W.columns[j] for j in row] for row in order]
            truth_all += [set(r.metrics)] * int(sel.sum())
        for q in hr:
            if ranked_all:
                hr[q].append(evaluate.hit_rate(ranked_all, truth_all, q))
                pooled.setdefault(q, ([], []))
                pooled[q][0].extend(ranked_all); pooled[q][1].extend(truth_all)
        print("  ", e, "|z| hit@100 %.3f hit@150 %.3f over %d labeled points" % (hr[1.0][-1], hr[1.5][-1], len(ranked_all)) if ranked_all else "")
    df = pd.DataFrame(res, columns=["entity", "l2", "pca"])
    print(ds, df.round(3).to_dict("records"), "mean l2 %.3f pca %.3f" % (df.l2.mean(), df.pca.mean()),
          "hit@100 %.3f hit@150 %.3f (mean over entities)" % (np.mean(hr[1.0]), np.mean(hr[1.5])),
          "pooled over points: hit@100 %.3f hit@150 %.3f" % tuple(evaluate.hit_rate(*pooled[q], q) for q in (1.0, 1.5)))
