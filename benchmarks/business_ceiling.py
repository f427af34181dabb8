"""How many of the retail demo's faults could any detector find? A bound from the simulation's truth.

    python benchmarks/business_ceiling.py                   # seeds 7, 11, 23, 31
    python benchmarks/business_ceiling.py --seed 7 --budget 1
    python benchmarks/business_ceiling.py --window 2         # every kind on 2-day windows

An oracle knows what no detector can: each store-SKU's expected demand on each day and its
negative-binomial dispersion (``DemoData.truth``). For each fault kind it reads the units sold
over the kind's rule window (``configs/alert_rules.yaml``) as a tail probability under normal
demand, with the same context the rule asks for:

- ``ghost_stock``: lower tail, while the on-hand is above 0 and unchanged since the reading before
  the window;
- ``sales_drop``: lower tail, while the on-hand moved and covered two days of demand throughout;
- ``unplanned_spike``: upper tail.

A fault is found when a window ending within 2 days of its onset (what ``business_alerts.py``
counts) is below the threshold. False alerts are runs of windows below it (a gap of at most a
day continues a run) on entity-days after the reference period, away from faults (their window
plus 2 days) and from calendar events (none in the window or the 2 days before it, where the
rules stay quiet), per 100 entity-weeks. The last lines pick one threshold per kind to find the
most faults within ``--budget`` false alerts per 100 entity-weeks (issue 17 allows 1): an
in-sample optimum over the oracle. It bounds rules of this form (one window, a tail test with
one threshold per kind), which must estimate what the oracle knows; not every conceivable
detector.

Results go to ``benchmarks/RESULTS.md`` (## Business alerts).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anomaly_assets.alert_config import load_alert_rules  # noqa: E402
from anomaly_assets.demo import retail  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KINDS = {"ghost_stock": "lower", "sales_drop": "lower", "unplanned_spike": "upper"}
THRESHOLDS = (1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1)
WITHIN = 2  # days after onset, as business_alerts.py counts


def _rolling_sum(a: np.ndarray, w: int) -> np.ndarray:
    """Sum over the ``w`` days ending at each day (NaN before the first full window)."""
    c = np.cumsum(a, axis=1)
    out = np.full(a.shape, np.nan)
    out[:, w - 1] = c[:, w - 1]
    out[:, w:] = c[:, w:] - c[:, :-w]
    return out


def _rolling(a: np.ndarray, w: int, fn) -> np.ndarray:
    v = np.lib.stride_tricks.sliding_window_view(a, w, axis=1)
    return np.concatenate([np.full((a.shape[0], w - 1), np.nan), fn(v, axis=-1)], axis=1)


def tail_p(kind: str, data, window: int) -> np.ndarray:
    """(E, T) oracle tail probability of the window ending each day, 1 where the context fails."""
    mean, k1 = data.truth["mean"], data.truth["dispersion"]
    sold = data.values[:, retail.SOLD, :]
    stock = data.values[:, retail.ON_HAND, :]
    m = np.maximum(_rolling_sum(mean, window), 1e-9)
    a = _rolling_sum(sold, window)
    # independent negative binomials of shape k and means m_t: variance M + sum(m_t^2) / k, matched
    # by one of mean M and shape k M^2 / sum(m_t^2) (window * k when the means are equal)
    k = k1[:, None] * m**2 / np.maximum(_rolling_sum(mean**2, window), 1e-18)
    q = k / (k + m)
    with np.errstate(invalid="ignore"):
        p = stats.nbinom.cdf(a, k, q) if KINDS[kind] == "lower" else stats.nbinom.sf(a - 1, k, q)
        step = np.abs(np.diff(stock, axis=1, prepend=np.nan))
        moved = _rolling_sum(np.nan_to_num(step, nan=1.0), window)  # a series's first day: unknown, moved
        if kind == "ghost_stock":
            ok = (moved == 0) & (stock > 0)
        elif kind == "sales_drop":
            ok = (moved > 0) & (_rolling(stock, window + 1, np.min) >= 2 * m / window)
        else:
            ok = np.ones(p.shape, bool)
    return np.where(ok & np.isfinite(p), p, 1.0)


def _episodes(flags: np.ndarray) -> int:
    """Runs of True per row, a gap of one day continuing a run."""
    f = flags.copy()
    f[:, 1:-1] |= flags[:, :-2] & flags[:, 2:]
    return int((f[:, 1:] & ~f[:, :-1]).sum() + f[:, 0].sum())


def ceiling(seed: int, window: int | None = None) -> tuple[dict, float]:
    """Per kind and threshold: (faults found, faults, false alerts); and the entity-weeks."""
    data = retail.simulate(seed=seed)
    windows = {r.name: window or r.window for r in load_alert_rules(REPO / "configs" / "alert_rules.yaml").rules
               if r.name in KINDS}
    n, t_len = data.values[:, 0, :].shape
    busy = np.zeros((n, t_len), bool)
    for f in data.faults:
        busy[f.entity_idx, f.start_idx : f.end_idx + WITHIN + 1] = True
    out = {}
    for kind in KINDS:
        # quiet where the rules are: a known event in the window or the 2 days before it
        near_event = _rolling(data.truth["events"].astype(float), windows[kind] + WITHIN, np.max) > 0
        normal = ~busy & ~np.nan_to_num(near_event).astype(bool)
        normal[:, : data.reference_days] = False
        p = tail_p(kind, data, windows[kind])
        onset = [p[f.entity_idx, f.start_idx : f.start_idx + WITHIN + 1].min() for f in data.faults
                 if f.fault_kind == kind]
        for thr in THRESHOLDS:
            out[kind, thr] = (int(np.sum(np.array(onset) <= thr)), len(onset), _episodes((p <= thr) & normal))
    return out, n * (t_len - data.reference_days) / 7.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, action="append")
    ap.add_argument("--budget", type=float, action="append",
                    help="false alerts per 100 entity-weeks, all kinds (default 1, 2 and 5)")
    ap.add_argument("--window", type=int, help="days of every kind's window (default: the rules')")
    a = ap.parse_args(argv)
    total: dict = {}
    weeks = 0.0
    for seed in a.seed or [7, 11, 23, 31]:
        got, w = ceiling(seed, a.window)
        weeks += w
        for key, v in got.items():
            total[key] = tuple(x + y for x, y in zip(total.get(key, (0, 0, 0)), v, strict=True))
    print(f"retail oracle, seeds {a.seed or [7, 11, 23, 31]} ({weeks:.0f} entity-weeks); "
          "faults found within 2 days / faults, false alerts per 100 entity-weeks:")
    for kind in KINDS:
        print(f"  {kind:16s}" + " | ".join(f"p<={thr:g} {total[kind, thr][0]}/{total[kind, thr][1]} "
                                           f"{100 * total[kind, thr][2] / weeks:.2f}" for thr in THRESHOLDS))
    faults = sum(total[k, THRESHOLDS[0]][1] for k in KINDS)
    for budget in a.budget or [1.0, 2.0, 5.0]:
        best = max((c for c in itertools.product(THRESHOLDS, repeat=len(KINDS))
                    if sum(total[k, t][2] for k, t in zip(KINDS, c, strict=True)) * 100 / weeks <= budget),
                   key=lambda c: sum(total[k, t][0] for k, t in zip(KINDS, c, strict=True)), default=None)
        if best is None:
            print(f"  no thresholds stay within {budget:g} false alerts per 100 entity-weeks")
            continue
        found = sum(total[k, t][0] for k, t in zip(KINDS, best, strict=True))
        false = sum(total[k, t][2] for k, t in zip(KINDS, best, strict=True)) * 100 / weeks
        print(f"  most found within {budget:g} per 100 entity-weeks: {found}/{faults} ({found / faults:.0%}) at "
              + ", ".join(f"{k} p<={t:g}" for k, t in zip(KINDS, best, strict=True)) + f" ({false:.2f} false)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
