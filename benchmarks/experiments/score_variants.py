"""Experiment: scoring variants on cached decompositions of the shared data (not part of the product).

    python benchmarks/experiments/score_variants.py smd asd

Caches features.decomposition per entity under /work/scratch_lead/cache (or $EXP_CACHE), then
for each day D fits on the trailing window before D and scores D, like the assets. Each variant
maps (train values, train residual_z, test values, test residual_z) -> raw per-point score; all
share EWMA smoothing. Reports mean point-wise best-F1 over entities on the test period and the
HitRate@100/150 of |z|-vs-trailing-history ranking.
"""
import os, sys, time
from pathlib import Path
import numpy as np, pandas as pd
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from anomaly_assets.core import evaluate
from anomaly_assets.core.detect import ewma
from anomaly_assets.core.fleet import DAY, DecompositionParams, days_in, decompose_days
from anomaly_assets.landing import discover_files, read_file, read_labels

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
CACHE = Path(os.environ.get("EXP_CACHE", "/work/scratch_lead/cache"))


def load(ds):
    root = SHARED / ds
    labels = read_labels(root / "labels.csv")
    splits = pd.read_csv(root / "splits.csv").set_index("entity_id").test_start
    out = []
    for f in discover_files(root):
        if f.name in ("labels.csv", "splits.csv"):
            continue
        cf = CACHE / ds / (f.name.split(".")[0] + ".parquet")
        if cf.exists():
            dec = pd.read_parquet(cf)
        else:
            obs = read_file(f, root=root).observations
            days = days_in(obs.ts.min().floor("D"), obs.ts.max().floor("D") + DAY)
            dec = decompose_days(obs, days, DecompositionParams())
            cf.parent.mkdir(parents=True, exist_ok=True)
            dec.to_parquet(cf)
        e = dec.entity_id.iloc[0]
        out.append((e, dec, labels[labels.entity_id == e], pd.Timestamp(splits[e], tz="UTC")))
    return out


def wide(dec, col):
    return dec.pivot(index="ts", columns="metric", values=col).sort_index()


def run(variant, data, training_days=28, alpha=0.1):
    f1s, hits, fa = [], {1.0: [], 1.5: []}, []
    for e, dec, labels, test_start in data:
        V, R = wide(dec, "value"), wide(dec, "residual_z")
        ts = V.index
        scores = pd.Series(np.nan, index=ts)
        devs = pd.DataFrame(np.nan, index=ts, columns=V.columns)
        for d in days_in(test_start.floor("D"), ts.max().floor("D") + DAY):
            tr = (ts >= d - pd.Timedelta(days=training_days)) & (ts < d)
            te = (ts >= d) & (ts < d + DAY)
            if tr.sum() < 16 or te.sum() == 0:
                continue
            lo = max(0, int(np.argmax(te)) - 300)
            sc_idx = np.arange(lo, int(np.flatnonzero(te)[-1]) + 1)
            raw, dev, kind = variant(V.values[tr], R.values[tr], V.values[sc_idx], R.values[sc_idx])
            ev = raw if kind == "final" else ewma(raw, alpha)
            keep = te[sc_idx]
            scores.iloc[sc_idx[keep]] = ev[keep]
            devs.iloc[sc_idx[keep]] = dev[keep]
        m = (ts >= test_start) & scores.notna().to_numpy()
        t = ts[m].tz_localize(None).to_numpy()
        y = evaluate.label_mask(t, [(r.start.tz_localize(None), r.end.tz_localize(None)) for r in labels.itertuples()])
        f1s.append(evaluate.best_f1(y, scores[m].to_numpy()).f1)
        if scores.attrs.get("final", True):
            fa.append(float(np.mean(scores[m].to_numpy()[~y] > -np.log(1e-3))))
        for r in labels[labels.metrics.map(len) > 0].itertuples():
            sel = (ts >= r.start) & (ts <= r.end) & m
            if not sel.any():
                continue
            order = np.argsort(-np.abs(np.nan_to_num(devs.values[sel])), axis=1, kind="stable")
            ranked = [[V.columns[j] for j in row] for row in order]
            for p in hits:
                hits[p].append(evaluate.hit_rate(ranked, [set(r.metrics)] * len(ranked), p))
    print(f"   false-alarm rate at p<1e-3 on unlabeled points (only meaningful for -log p variants): {np.round(fa, 4).tolist()}")
    return np.mean(f1s), np.mean(hits[1.0]) if hits[1.0] else np.nan, np.mean(hits[1.5]) if hits[1.5] else np.nan, f1s


def zstats(Vtr):
    mu = np.nanmean(Vtr, 0); sd = np.nanstd(Vtr, 0)
    rng = np.nanmax(Vtr, 0) - np.nanmin(Vtr, 0)
    sd = np.maximum(sd, np.maximum(0.01 * rng, 1e-6 * np.maximum(np.abs(mu), 1)))
    return np.nan_to_num(mu), np.nan_to_num(sd, nan=1.0)


def v_current(Vtr, Rtr, V, R):
    mu, sd = zstats(Vtr)
    rm, rs = np.nan_to_num(np.nanmean(Rtr, 0)), np.maximum(np.nan_to_num(np.nanstd(Rtr, 0), nan=1.0), 0.1)
    zv = np.nan_to_num((V - mu) / sd); zr = np.nan_to_num((R - rm) / rs)
    dev = np.where(np.abs(zr) > np.abs(zv), zr, zv)
    return np.abs(dev).max(1), dev, None


def v_maxz(Vtr, Rtr, V, R):
    mu, sd = zstats(Vtr); zv = np.nan_to_num((V - mu) / sd)
    return np.abs(zv).max(1), zv, None


def v_l2z(Vtr, Rtr, V, R):
    mu, sd = zstats(Vtr); zv = np.nan_to_num((V - mu) / sd)
    return np.sqrt((zv ** 2).mean(1)), zv, None


def v_l2dev(Vtr, Rtr, V, R):
    raw, dev, _ = v_current(Vtr, Rtr, V, R)
    return np.sqrt((dev ** 2).mean(1)), dev, None


def _pca_err(Ztr, Z, var=0.9):
    from sklearn.decomposition import PCA
    k = min(Ztr.shape) - 1
    p = PCA(n_components=var, svd_solver="full").fit(Ztr) if k > 1 else None
    if p is None:
        return np.zeros(len(Z)), Z
    rec = p.inverse_transform(p.transform(Z))
    return np.sqrt(((Z - rec) ** 2).sum(1)), Z - rec


def v_pca(Vtr, Rtr, V, R):
    mu, sd = zstats(Vtr); ztr = np.nan_to_num((Vtr - mu) / sd); zv = np.nan_to_num((V - mu) / sd)
    err, res = _pca_err(ztr, zv)
    return err, zv, None


def v_pca_plus_max(Vtr, Rtr, V, R):
    mu, sd = zstats(Vtr); ztr = np.nan_to_num((Vtr - mu) / sd); zv = np.nan_to_num((V - mu) / sd)
    err, res = _pca_err(ztr, zv)
    etr, _ = _pca_err(ztr, ztr)
    raw_c, dev, _ = v_current(Vtr, Rtr, V, R)
    return err / (np.median(etr) + 1e-9) + raw_c / 3, dev, None


VARIANTS = {k[2:]: v for k, v in globals().items() if k.startswith("v_")}



# --- calibrated combinations: each channel gets its own tail, the point takes the smallest p ------
def _pot_logp(ev_tr, ev, q=0.98):
    u = np.quantile(ev_tr, q); exc = ev_tr[ev_tr > u] - u
    beta = max(exc.mean() if len(exc) else 0.0, 1e-3 * max(u, 1.0), 1e-6)
    pu = 1 - q
    logp = np.where(ev > u, np.log(pu) - (ev - u) / beta, np.log(1 - (1 - pu) * np.clip(ev / max(u, 1e-9), 0, 1) + 1e-300))
    return -logp


def _channels(Vtr, Rtr, V, R):
    mu, sd = zstats(Vtr)
    rm, rs = np.nan_to_num(np.nanmean(Rtr, 0)), np.maximum(np.nan_to_num(np.nanstd(Rtr, 0), nan=1.0), 0.1)
    f = lambda A, B: (np.nan_to_num((A - mu) / sd), np.nan_to_num((B - rm) / rs))
    return f(Vtr, Rtr), f(V, R)


ALPHA = 0.1


def _calib(chs_tr, chs, dev):
    # raw returned is already "evidence" combined; run() applies EWMA on it again, so undo that by
    # returning a score whose EWMA is monotone-ish... instead we mark it with attribute.
    s = np.max([_pot_logp(ewma(a, ALPHA), ewma(b, ALPHA)) for a, b in zip(chs_tr, chs)], axis=0)
    return s


def v_cal_v_r(Vtr, Rtr, V, R):
    (ztr, rtr), (z, r) = _channels(Vtr, Rtr, V, R)
    dev = np.where(np.abs(r) > np.abs(z), r, z)
    s = _calib([np.abs(ztr).max(1), np.abs(rtr).max(1)], [np.abs(z).max(1), np.abs(r).max(1)], dev)
    return s, dev, "final"


def v_cal_v_r_raw(Vtr, Rtr, V, R):
    (ztr, rtr), (z, r) = _channels(Vtr, Rtr, V, R)
    dev = np.where(np.abs(r) > np.abs(z), r, z)
    a_tr, a = [np.abs(ztr).max(1), np.abs(rtr).max(1)], [np.abs(z).max(1), np.abs(r).max(1)]
    s = np.max([_pot_logp(ewma(x, ALPHA), ewma(y, ALPHA)) for x, y in zip(a_tr, a)]
               + [_pot_logp(x, y, 0.999) for x, y in zip(a_tr, a)], axis=0)
    return s, dev, "final"


def v_cal_v_only_raw(Vtr, Rtr, V, R):
    (ztr, rtr), (z, r) = _channels(Vtr, Rtr, V, R)
    a_tr, a = np.abs(ztr).max(1), np.abs(z).max(1)
    s = np.maximum(_pot_logp(ewma(a_tr, ALPHA), ewma(a, ALPHA)), _pot_logp(a_tr, a, 0.999))
    return s, z, "final"


VARIANTS = {k[2:]: v for k, v in globals().items() if k.startswith("v_")}


def _pot_logp_cols(E_tr, E, q=0.98):
    """Per-column exponential-tail -log p of E given training E_tr (both (n, m))."""
    u = np.quantile(E_tr, q, axis=0)
    exc = np.where(E_tr > u, E_tr - u, np.nan)
    beta = np.nan_to_num(np.nanmean(exc, axis=0), nan=0.0)
    beta = np.maximum(beta, np.maximum(1e-3 * np.maximum(u, 1.0), 1e-6))
    pu = 1 - q
    above = -(np.log(pu) - (E - u) / beta)
    below = -np.log(1 - (1 - pu) * np.clip(E / np.maximum(u, 1e-9), 0, 1) + 1e-300)
    return np.where(E > u, above, below)


def _percal(Vtr, Rtr, V, R, use_r=True, agg="max", q=0.98):
    (ztr, rtr), (z, r) = _channels(Vtr, Rtr, V, R)
    chans_tr, chans = [ztr], [z]
    if use_r:
        chans_tr.append(rtr); chans.append(r)
    L = [_pot_logp_cols(ewma(np.abs(a), ALPHA), ewma(np.abs(b), ALPHA), q) for a, b in zip(chans_tr, chans)]
    L = np.max(L, axis=0)  # per metric: the stronger channel
    if agg == "max":
        s = L.max(1)
    else:
        k = int(agg)
        s = -np.sort(-L, axis=1)[:, :k].mean(1)
    return s, L, "final"


def v_percal(Vtr, Rtr, V, R):
    return _percal(Vtr, Rtr, V, R)


def v_percal_v(Vtr, Rtr, V, R):
    return _percal(Vtr, Rtr, V, R, use_r=False)


def v_percal_top3(Vtr, Rtr, V, R):
    return _percal(Vtr, Rtr, V, R, agg="3")


def v_percal_q95(Vtr, Rtr, V, R):
    return _percal(Vtr, Rtr, V, R, q=0.95)


def _wr(w):
    def f(Vtr, Rtr, V, R):
        (ztr, rtr), (z, r) = _channels(Vtr, Rtr, V, R)
        r = w * r
        dev = np.where(np.abs(r) > np.abs(z), r, z)
        return np.abs(dev).max(1), dev, None
    return f


v_wr50, v_wr70, v_wr85 = _wr(0.5), _wr(0.7), _wr(0.85)


def v_sum_vr(Vtr, Rtr, V, R):
    (ztr, rtr), (z, r) = _channels(Vtr, Rtr, V, R)
    dev = np.where(np.abs(r) > np.abs(z), r, z)
    return np.abs(z).max(1) + np.abs(r).max(1), dev, None


def v_pca_train_v(Vtr, Rtr, V, R):
    (ztr, rtr), (z, r) = _channels(Vtr, Rtr, V, R)
    err, _ = _pca_err(ztr, z)
    etr, _ = _pca_err(ztr, ztr)
    a_tr = np.abs(ztr).max(1); a = np.abs(z).max(1)
    s = np.maximum(_pot_logp(ewma(a_tr, ALPHA), ewma(a, ALPHA)), _pot_logp(ewma(etr, ALPHA), ewma(err, ALPHA)))
    return s, z, "final"


def v_fisher_vr(Vtr, Rtr, V, R):
    (ztr, rtr), (z, r) = _channels(Vtr, Rtr, V, R)
    dev = np.where(np.abs(r) > np.abs(z), r, z)
    a_tr, a = [np.abs(ztr).max(1), np.abs(rtr).max(1)], [np.abs(z).max(1), np.abs(r).max(1)]
    s = np.sum([_pot_logp(ewma(x, ALPHA), ewma(y, ALPHA)) for x, y in zip(a_tr, a)], axis=0)
    return s, dev, "final"


def v_fisher_vr_pca(Vtr, Rtr, V, R):
    (ztr, rtr), (z, r) = _channels(Vtr, Rtr, V, R)
    dev = np.where(np.abs(r) > np.abs(z), r, z)
    err, _ = _pca_err(ztr, z); etr, _ = _pca_err(ztr, ztr)
    a_tr, a = [np.abs(ztr).max(1), np.abs(rtr).max(1), etr], [np.abs(z).max(1), np.abs(r).max(1), err]
    s = np.sum([_pot_logp(ewma(x, ALPHA), ewma(y, ALPHA)) for x, y in zip(a_tr, a)], axis=0)
    return s, dev, "final"


def v_fisher_raw_ewma(Vtr, Rtr, V, R):
    (ztr, rtr), (z, r) = _channels(Vtr, Rtr, V, R)
    dev = np.where(np.abs(r) > np.abs(z), r, z)
    a_tr, a = np.abs(np.where(np.abs(rtr) > np.abs(ztr), rtr, ztr)).max(1), np.abs(dev).max(1)
    s = _pot_logp(ewma(a_tr, ALPHA), ewma(a, ALPHA)) + _pot_logp(ewma(a_tr, 0.02), ewma(a, 0.02))
    return s, dev, "final"


def _ms(w, alphas=(0.1, 0.02), spike=False):
    def f(Vtr, Rtr, V, R):
        (ztr, rtr), (z, r) = _channels(Vtr, Rtr, V, R)
        rtr, r = w * rtr, w * r
        dev = np.where(np.abs(r) > np.abs(z), r, z)
        a_tr = np.abs(np.where(np.abs(rtr) > np.abs(ztr), rtr, ztr)).max(1); a = np.abs(dev).max(1)
        s = np.sum([_pot_logp(ewma(a_tr, al), ewma(a, al)) for al in alphas], axis=0)
        if spike:
            s = np.maximum(s, 2 * _pot_logp(a_tr, a, 0.999))
        return s, dev, "final"
    return f


v_ms100, v_ms70, v_ms50 = _ms(1.0), _ms(0.7), _ms(0.5)
v_ms70_spike = _ms(0.7, spike=True)
v_ms70_3 = _ms(0.7, alphas=(0.3, 0.1, 0.02))


def _real(**kw):
    from anomaly_assets.core.detect import EntityDetector
    def f(Vtr, Rtr, V, R):
        det = EntityDetector(**kw).fit(Vtr, Rtr)
        parts = det.score_parts(V, R)
        return -np.log(np.maximum(parts.p_value, 1e-300)), parts.deviation, "final"
    return f


v_real = _real()
v_real_nospike = _real(spike_quantile=None)
v_real_if05 = _real(if_weight=0.5)
v_real_fast = _real(smoothing_alphas=(0.1,))
v_real_bonf = _real(combine='bonferroni')
v_real_bonf_q99 = _real(combine='bonferroni', tail_quantile=0.99)
v_real_slow = _real(smoothing_alphas=(0.02,))
v_real_if1 = _real(if_weight=1.0)


VARIANTS = {k[2:]: v for k, v in globals().items() if k.startswith('v_')}

if __name__ == "__main__":
    sets = [a for a in sys.argv[1:] if a in ("smd", "asd")] or ["smd", "asd"]
    names = [a for a in sys.argv[1:] if a in VARIANTS] or list(VARIANTS)
    data = {ds: load(ds) for ds in sets}
    for n in names:
        for ds in sets:
            t0 = time.perf_counter()
            f1, h1, h15, per = run(VARIANTS[n], data[ds])
            print(f"{n:<14} {ds}: best-F1 {f1:.3f}  hit@100 {h1:.3f}  hit@150 {h15:.3f}  per-entity {np.round(per, 3).tolist()}  ({time.perf_counter()-t0:.0f}s)", flush=True)
