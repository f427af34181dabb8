"""Detection quality of the real core on every labeled dataset, with baselines from the same run.

    python benchmarks/detector_quality.py --all                 # every dataset, default settings
    python benchmarks/detector_quality.py --dataset smd --dataset skab
    python benchmarks/detector_quality.py --all --backends      # + iforest, ecod, hbos
    python benchmarks/detector_quality.py --all --lodo tail_quantile=0.95   # a candidate default
    python benchmarks/detector_quality.py --data DIR [--data DIR ...]  # any folder in the landing format

Datasets: ``../shared/data`` (NAB realKnownCause and artificialWithAnomaly, SMD, ASD, SKAB; and
NAB artificialNoAnomaly, ``nab_none``, which has no anomalies: only its flagged share counts) and
the demo kinds (storage, retail, industrial; generated with fixed seeds: dev data). A folder
holds landing files, ``labels.csv`` and optionally ``splits.csv`` (entity_id,test_start); without
splits, each series' first 15 % is its reference (NAB's probationary period).

What runs is what the assets run: ``landing.read_file`` -> ``core.fleet.detect_days`` over every
day in order (each day scored from the days before it; holidays and other known events from
``entities.csv`` and ``calendar.csv`` when present). Figures are on each entity's test period (after its reference),
point-wise (no point-adjust), as the mean over entities with at least one labeled test point:

- best-F1 and AUC-PR of ``anomaly_score``; operating F1 of ``is_anomaly``;
- event recall and precision (a labeled window is found when one of its points is flagged; a run
  of flagged points is correct when it overlaps a window) and the median delay, in points, from
  a window's start to its first flag;
- the flagged share of normal test points (all entities), and of those before each entity's
  first labeled test point (normal operation, not the aftermath of a fault; all of an unlabeled
  entity's), and the share of points left unscored after each series' first 50;
- where labels name root-cause metrics (SMD, ASD): the root-cause HitRate@100 % / @150 % (Su et
  al., KDD 2019) of the explanations' ranking at the labeled test points the detector flagged
  (the points that get an explanation), beside the ranking by each point's own |z| against the
  reference (mean and standard deviation) at the same points.

Baselines, computed here on the same points: L2 norm and PCA error (components up to 95 % of the
variance) of values standardized on the reference period, and a causal rolling robust z-score
(300-point trailing median / MAD, max over metrics).

``--lodo key=value``: run the defaults and the candidate, and keep the candidate only if, for
every dataset left out, it raises the mean best-F1 (and AUC-PR) over the others without lowering
the left-out dataset's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anomaly_assets.calendars import event_days, holidays_in, load_calendar, others_in  # noqa: E402
from anomaly_assets.core import evaluate  # noqa: E402
from anomaly_assets.core.detector import DetectorParams  # noqa: E402
from anomaly_assets.core.fleet import days_in, detect_days  # noqa: E402
from anomaly_assets.landing import discover_files, read_file, read_labels  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SHARED_SETS = {"nab_real": "nab/realKnownCause", "nab_art": "nab/artificialWithAnomaly", "smd": "smd", "asd": "asd",
               "skab": "skab", "nab_none": "nab/artificialNoAnomaly"}  # nab_none: no anomalies, a flagged share only
DEMO_SETS = ("storage", "retail", "industrial")
SIDECARS = {"labels.csv", "splits.csv", "faults.csv", "entities.csv", "calendar.csv"}
REFERENCE_SHARE = 0.15  # NAB's probationary period, for folders without splits.csv
CHUNK_ENTITIES = 200


@dataclass
class Data:
    name: str
    obs: pd.DataFrame  # entity_id, metric, ts, value
    labels: pd.DataFrame
    test_start: dict  # entity -> Timestamp (absent: first REFERENCE_SHARE of its points)
    holidays: dict  # entity -> holiday days (days since the epoch)
    events: dict  # entity -> its other known event days (promotions, peaks, closures)


def load_folder(name: str, root: Path, landing: Path | None = None) -> Data:
    landing = landing or root
    files = [f for f in discover_files(landing) if f.name not in SIDECARS]
    obs = pd.concat([read_file(f, root=landing).observations for f in files], ignore_index=True)
    obs["entity_id"] = obs["entity_id"].astype(str)
    obs["metric"] = obs["metric"].astype(str)
    lab_path = root / "labels.csv" if (root / "labels.csv").exists() else root.parent / "labels.csv"
    labels = read_labels(lab_path)
    splits = {}
    if (root / "splits.csv").exists():
        s = pd.read_csv(root / "splits.csv")
        splits = {str(e): pd.Timestamp(t, tz="UTC") if pd.Timestamp(t).tzinfo is None else pd.Timestamp(t)
                  for e, t in zip(s.entity_id, s.test_start)}
    entities = pd.read_csv(root / "entities.csv", dtype=str) if (root / "entities.csv").exists() else None
    calendar = load_calendar(root / "calendar.csv")
    years = range(obs.ts.min().year, obs.ts.max().year + 1)
    known = event_days(obs.entity_id.unique(), years, entities, calendar) if entities is not None or calendar is not None else None
    hol = holidays_in(known) if known is not None else {}
    others = others_in(known) if known is not None else {}
    return Data(name, obs, labels, splits, hol, others)


def load(name: str, workdir: Path) -> Data:
    if name in SHARED_SETS:
        return load_folder(name, SHARED / SHARED_SETS[name])
    from anomaly_assets.demo.kinds import generate

    out = workdir / name
    generate(name, out)
    return load_folder(name, out, out / "landing")


def detect_frames(data: Data, params: DetectorParams, families=None, units=None) -> dict[str, pd.DataFrame]:
    """decomposition, scores and explanations of every point, entity chunk by entity chunk."""
    parts = {"decomposition": [], "scores": [], "explanations": []}
    ids = np.sort(data.obs.entity_id.unique())
    for a in range(0, len(ids), CHUNK_ENTITIES):
        chunk = data.obs[data.obs.entity_id.isin(ids[a:a + CHUNK_ENTITIES])]
        days = days_in(chunk.ts.min().floor("D"), chunk.ts.max().floor("D") + pd.Timedelta(days=1))
        d = detect_days(chunk, days, params, families, units, holidays=data.holidays, events=data.events)
        for name, frame in (("decomposition", d.decomposition), ("scores", d.scores), ("explanations", d.explanations)):
            parts[name].append(frame)
    return {name: pd.concat(frames, ignore_index=True) for name, frames in parts.items()}


# -- baselines ---------------------------------------------------------------------------------
def _standardized(X, ref):
    R = X[ref]
    mu = np.nanmean(R, axis=0)
    sd = np.nanstd(R, axis=0)
    sd = np.where((sd > 0) & np.isfinite(sd), sd, 1.0)
    return np.nan_to_num((X - np.nan_to_num(mu)) / sd)


def l2_norm(X, ref):
    return np.sqrt(np.square(_standardized(X, ref)).sum(axis=1))


def pca_error(X, ref, variance=0.95):
    from sklearn.decomposition import PCA

    Z = _standardized(X, ref)
    if Z.shape[1] < 2 or ref.sum() < 3:
        return np.abs(Z).max(axis=1)
    p = PCA(n_components=variance, svd_solver="full").fit(Z[ref])
    return np.square(Z - p.inverse_transform(p.transform(Z))).sum(axis=1)


def rolling_robust_z(X, window=300, block=4096):
    from numpy.lib.stride_tricks import sliding_window_view

    X = np.nan_to_num(X)
    T, m = X.shape
    med = np.full((T, m), np.nan)
    mad = np.full((T, m), np.nan)
    for t in range(1, min(window, T)):
        md = np.median(X[:t], axis=0)
        med[t], mad[t] = md, np.median(np.abs(X[:t] - md), axis=0)
    if T > window:
        V = sliding_window_view(X, window, axis=0)
        for a in range(0, T - window, block):
            b = min(T - window, a + block)
            md = np.median(V[a:b], axis=2)
            med[a + window:b + window] = md
            mad[a + window:b + window] = np.median(np.abs(V[a:b] - md[..., None]), axis=2)
    d = np.abs(X - med)
    mad = 1.4826 * mad
    z = np.where(mad > 0, d / np.where(mad > 0, mad, 1.0), np.where(d > 0, 1e3, 0.0))
    return np.nan_to_num(z).max(axis=1)


BASELINES = {"l2": l2_norm, "pca": pca_error, "rolling_z": lambda X, ref: rolling_robust_z(X)}


# -- evaluation --------------------------------------------------------------------------------
def _entity_arrays(data: Data, entity: str):
    g = data.obs[data.obs.entity_id == entity]
    w = g.pivot_table(index="ts", columns="metric", values="value", aggfunc="first").sort_index()
    ts = w.index
    lab = data.labels[data.labels.entity_id == entity]
    y = evaluate.label_mask(ts.tz_convert("UTC").tz_localize(None),
                            [(r.start.tz_localize(None) if r.start.tzinfo else r.start,
                              r.end.tz_localize(None) if r.end.tzinfo else r.end) for r in lab.itertuples()])
    if entity in data.test_start:
        test = np.asarray(ts >= data.test_start[entity])
    else:
        test = np.arange(len(ts)) >= int(REFERENCE_SHARE * len(ts))
    return ts, w.to_numpy(float), y, test, list(w.columns)


def _delays(y, flagged):
    out = []
    for s, e in evaluate.events(y):
        hit = np.flatnonzero(flagged[s:e + 1])
        if len(hit):
            out.append(int(hit[0]))
    return out


def _root_cause(data: Data, entity: str, ts, X, cols, y, test, flagged,
                explanations: pd.DataFrame | None) -> dict:
    """HitRate@100/150 % of the explanations and of the |z| ranking at the entity's flagged
    labeled test points with root-cause metrics (empty when there are none)."""
    lab = data.labels[(data.labels.entity_id == entity) & (data.labels.metrics.map(len) > 0)]
    if explanations is None or lab.empty or len(cols) < 2:  # one metric ranks itself first
        return {}
    t = ts.tz_convert("UTC")
    truth = [set() for _ in range(len(ts))]
    for r in lab.itertuples():
        for i in np.flatnonzero((t >= r.start) & (t <= r.end)):
            truth[i] |= set(r.metrics)
    pick = [i for i in np.flatnonzero(test & y & flagged) if truth[i]]
    if not pick:
        return {}
    ex = explanations[explanations.entity_id == entity].sort_values(["ts", "rank"])
    ranked = ex.groupby("ts", sort=False)["metric"].agg(list)
    ranked.index = pd.DatetimeIndex(ranked.index).tz_convert("UTC")
    ours = [ranked.get(t[i], []) for i in pick]
    z = np.abs(_standardized(X, ~test)[pick])
    by_z = [[cols[j] for j in row] for row in np.argsort(-z, axis=1, kind="stable")]
    gt = [truth[i] for i in pick]
    return {"rc_points": len(pick), **{f"rc_hit{int(100 * q)}": evaluate.hit_rate(ours, gt, q) for q in (1.0, 1.5)},
            **{f"rc_z_hit{int(100 * q)}": evaluate.hit_rate(by_z, gt, q) for q in (1.0, 1.5)}}


def evaluate_dataset(data: Data, scores: pd.DataFrame | None, baselines: bool = True,
                     explanations: pd.DataFrame | None = None) -> dict:
    rows, normal_flags, normal_n, unscored, n_after = [], 0, 0, 0, 0
    before_flags, before_n = 0, 0
    by_entity = {e: g for e, g in scores.groupby("entity_id")} if scores is not None else {}
    for entity in np.sort(data.obs.entity_id.unique()):
        ts, X, y, test, cols = _entity_arrays(data, entity)
        r = {"entity": entity, "labeled": int(y[test].sum())}
        if scores is not None:
            s = by_entity[entity].set_index("ts").reindex(ts)
            score = s["anomaly_score"].to_numpy(float)
            flagged = s["is_anomaly"].fillna(False).to_numpy(bool)
            unscored += int(np.isnan(score[50:]).sum())
            n_after += max(0, len(score) - 50)
            normal = test & ~y
            normal_flags += int(flagged[normal].sum())
            normal_n += int(normal.sum())
            # before the entity's first labeled test point: normal operation, not a fault's aftermath
            first = np.flatnonzero(test & y)
            before = normal & (np.arange(len(ts)) < (first[0] if len(first) else len(ts)))
            before_flags += int(flagged[before].sum())
            before_n += int(before.sum())
            r["flagged_normal"] = float(flagged[normal].mean()) if normal.any() else np.nan
            if y[test].any():
                st = np.nan_to_num(score[test], nan=-1.0)
                r["best_f1"] = evaluate.best_f1(y[test], st).f1
                r["auc_pr"] = evaluate.average_precision(y[test], st)
                r["f1"] = evaluate.pointwise(y[test], flagged[test]).f1
                ev = evaluate.event_metrics(y[test], flagged[test])
                r.update(event_recall=ev.event_recall, event_precision=ev.event_precision,
                         events=ev.n_true_events, events_hit=ev.true_events_hit, pred_events=ev.n_pred_events,
                         pred_correct=ev.pred_events_correct)
                r["delays"] = _delays(y[test], flagged[test])
            r.update(_root_cause(data, entity, ts, X, cols, y, test, flagged, explanations))
        if baselines and y[test].any():
            ref = ~test
            for name, fn in BASELINES.items():
                b = fn(X, ref)[test]
                r[f"{name}_best_f1"] = evaluate.best_f1(y[test], b).f1
                r[f"{name}_auc_pr"] = evaluate.average_precision(y[test], b)
        rows.append(r)
    df = pd.DataFrame(rows)
    lab = df[df.labeled > 0]
    out = {"dataset": data.name, "entities": len(df), "labeled_entities": len(lab)}
    for c in [c for c in df.columns if c.endswith(("best_f1", "auc_pr")) or c.startswith(("rc_hit", "rc_z_hit"))] + ["f1"]:
        if c in lab:
            out[c] = float(lab[c].mean())
    if "rc_points" in lab:
        out["rc_points"] = int(lab["rc_points"].sum())
    if scores is not None and len(lab):
        out["event_recall"] = float(lab.events_hit.sum() / max(lab.events.sum(), 1))
        out["event_precision"] = float(lab.pred_correct.sum() / max(lab.pred_events.sum(), 1))
        delays = [d for ds in lab.delays for d in ds]
        out["median_delay_points"] = float(np.median(delays)) if delays else np.nan
    if scores is not None:  # an unlabeled folder (normal data only) still has its flagged share
        out["flagged_normal"] = normal_flags / normal_n if normal_n else np.nan
        out["flagged_before_faults"] = before_flags / before_n if before_n else np.nan
        out["unscored_after_50"] = unscored / max(n_after, 1)
    return out


def run(names, params: DetectorParams, workdir: Path, baselines=True, data_dirs=()) -> list[dict]:
    results = []
    sets = [(n, None) for n in names] + [(Path(d).name, Path(d)) for d in data_dirs]
    for name, folder in sets:
        data = load(name, workdir) if folder is None else load_folder(name, folder)
        t1 = time.perf_counter()
        frames = detect_frames(data, params)
        t2 = time.perf_counter()
        r = evaluate_dataset(data, frames["scores"], baselines, frames["explanations"])
        r["seconds_detect"] = round(t2 - t1, 1)
        results.append(r)
        print(_line(r), flush=True)
    return results


def _line(r: dict) -> str:
    def f(k):
        v = r.get(k)
        return "  -  " if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"
    best = max((r.get(f"{b}_best_f1", -1), b) for b in BASELINES)
    return (f"{r['dataset']:11s} best-F1 {f('best_f1')} AUC-PR {f('auc_pr')} | F1 {f('f1')} events "
            f"{f('event_recall')}/{f('event_precision')} delay {r.get('median_delay_points', float('nan')):.0f} pts | "
            f"flagged normal {100 * r.get('flagged_normal', float('nan')):.2f}% "
            f"(before faults {100 * r.get('flagged_before_faults', float('nan')):.2f}%) unscored {100 * r.get('unscored_after_50', float('nan')):.2f}% || "
            + " ".join(f"{b} {f(b + '_best_f1')}/{f(b + '_auc_pr')}" for b in BASELINES)
            + (f" | best baseline {best[1]}" if r.get("labeled_entities") else " | no labels")
            + (f" | root cause @100/150 {f('rc_hit100')}/{f('rc_hit150')} (|z| {f('rc_z_hit100')}/{f('rc_z_hit150')}) "
               f"at {r['rc_points']} points"
               if "rc_hit100" in r else "")
            + f" ({r['seconds_detect']} s)")


def summary(results: list[dict]) -> str:
    df = pd.DataFrame(results).set_index("dataset")
    df = df[df.labeled_entities > 0]  # an unlabeled folder has no F1 to average
    lines = []
    means = {c: df[c].mean() for c in df.columns if c.endswith("best_f1") or c.endswith("auc_pr")}
    best_base = max((means.get(f"{b}_best_f1", -1), b) for b in BASELINES)
    lines.append(f"mean over {len(df)} datasets: project best-F1 {means.get('best_f1', np.nan):.3f} AUC-PR "
                 f"{means.get('auc_pr', np.nan):.3f}; best baseline ({best_base[1]}) best-F1 {best_base[0]:.3f} AUC-PR "
                 f"{means.get(best_base[1] + '_auc_pr', np.nan):.3f}")
    below = [d for d in df.index if any(df.loc[d, m] < max(df.loc[d, f"{b}_{m}"] for b in BASELINES) - 1e-9
                                        for m in ("best_f1", "auc_pr"))]
    lines.append("datasets where a baseline beats the project: " + (", ".join(below) or "none"))
    return "\n".join(lines)


def lodo(base: list[dict], cand: list[dict]) -> tuple[bool, str]:
    """Leave-one-dataset-out verdict on a candidate change (both lists in the same dataset order)."""
    b = pd.DataFrame(base).set_index("dataset")
    c = pd.DataFrame(cand).set_index("dataset")
    b, c = b[b.labeled_entities > 0], c[c.labeled_entities > 0]  # nothing to score F1 on otherwise
    ok, lines = True, []
    for left in b.index:
        rest = [d for d in b.index if d != left]
        for m in ("best_f1", "auc_pr"):
            gain_rest = c.loc[rest, m].mean() - b.loc[rest, m].mean()
            gain_left = c.loc[left, m] - b.loc[left, m]
            fold_ok = gain_rest > 0 and gain_left >= -1e-3
            ok &= fold_ok
            lines.append(f"  leave out {left:11s} {m}: others {gain_rest:+.4f}, left out {gain_left:+.4f} "
                         f"{'ok' if fold_ok else 'REJECT'}")
    return ok, "\n".join(lines)


def parse_params(pairs) -> DetectorParams:
    kw = {}
    names = {f.name: f for f in fields(DetectorParams)}
    for kv in pairs:
        k, v = kv.split("=", 1)
        if k not in names:
            raise SystemExit(f"--param {k}: not a DetectorParams field ({', '.join(names)})")
        val = json.loads(v) if v[:1] in "[{0123456789-tfn." else v
        kw[k] = tuple(val) if isinstance(val, list) else val
    return DetectorParams(**kw)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--all", action="store_true", help="every shared dataset and demo kind")
    ap.add_argument("--dataset", action="append", default=[], help=", ".join([*SHARED_SETS, *DEMO_SETS]))
    ap.add_argument("--data", action="append", default=[], help="a folder in the landing format with labels.csv")
    ap.add_argument("--param", action="append", default=[], help="DetectorParams field=value")
    ap.add_argument("--backends", action="store_true", help="also run the iforest, ecod and hbos backends")
    ap.add_argument("--lodo", action="append", default=[], help="candidate field=value to judge leave-one-dataset-out")
    ap.add_argument("--json", type=Path, help="write every result here")
    a = ap.parse_args(argv)
    names = [*SHARED_SETS, *DEMO_SETS] if a.all else a.dataset
    if not names and not a.data:
        names = [*SHARED_SETS, *DEMO_SETS]
    params = parse_params(a.param)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print(f"== project ({params.detector}) and baselines", flush=True)
        out["default"] = run(names, params, work, data_dirs=a.data)
        print(summary(out["default"]), flush=True)
        if a.backends:
            for backend in ("iforest", "ecod", "hbos"):
                print(f"== backend {backend}", flush=True)
                p = DetectorParams(**{**params.__dict__, "detector": backend})
                out[backend] = run(names, p, work, baselines=False, data_dirs=a.data)
        for cand in a.lodo:
            print(f"== candidate {cand}", flush=True)
            p = parse_params([*a.param, cand])
            out[cand] = run(names, p, work, baselines=False, data_dirs=a.data)
            keep, detail = lodo(out["default"], out[cand])
            print(detail)
            print(f"candidate {cand}: {'KEEP' if keep else 'reject'}", flush=True)
    if a.json:
        a.json.write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
