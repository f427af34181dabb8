"""Benchmark: fleet-batched STL vs a statsmodels per-series loop.

    .venv/bin/python benchmarks/bench_stl.py [--series 2000] [--sample 100] [--reps 3]

Prints, for ``--series`` hourly series x 720 points (period 24), the median
of ``--reps`` runs of

* statsmodels ``STL(y, period=24, robust=...).fit()`` in a Python loop, timed
  on ``--sample`` series and extrapolated linearly to the whole fleet;
* ``anomaly_assets.core.decompose.stl`` on the whole fleet at once;

robust and non-robust, and the ratio; then the batched decomposition of 38
series x 47,000 one-minute points with period 1440 (the SMD shape) with its
peak traced memory.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from statsmodels.tsa.seasonal import STL  # noqa: E402

from anomaly_assets.core.decompose import stl  # noqa: E402


def fleet(n_series: int, n_obs: int, period: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n_obs)
    Y = (
        rng.normal(50, 10, size=(n_series, 1))
        + rng.uniform(1, 5, size=(n_series, 1)) * np.sin(2 * np.pi * t / period)[None, :]
        + 0.01 * rng.normal(size=(n_series, 1)) * t[None, :]
        + rng.normal(size=(n_series, n_obs))
    )
    spikes = rng.random(Y.shape) < 0.005
    Y[spikes] += rng.normal(0, 20, size=spikes.sum())
    return Y


def median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=2000)
    ap.add_argument("--obs", type=int, default=720)
    ap.add_argument("--sample", type=int, default=100)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--skip-smd", action="store_true")
    args = ap.parse_args()

    period = 24
    Y = fleet(args.series, args.obs, period)
    sample = Y[: args.sample]
    print(f"numpy {np.__version__}, {os.cpu_count()} CPUs; median of {args.reps} runs")
    print(f"\n{args.series} series x {args.obs} points, period {period}")
    print(f"{'':12s} {'statsmodels loop':>26s} {'batched':>10s} {'speed-up':>9s}")
    for robust in (False, True):
        t_sm = median_time(
            lambda: [STL(y, period=period, robust=robust).fit() for y in sample], args.reps)
        t_sm_fleet = t_sm * args.series / len(sample)
        t_b = median_time(lambda: stl(Y, period, robust=robust), args.reps)
        label = "robust" if robust else "non-robust"
        print(f"{label:12s} {t_sm_fleet:8.2f} s ({1e3 * t_sm / len(sample):5.1f} ms/series)"
              f" {t_b:9.3f} s {t_sm_fleet / t_b:8.0f}x")
    print(f"(statsmodels timed on {len(sample)} series and extrapolated x"
          f"{args.series / len(sample):g} to {args.series})")

    if args.skip_smd:
        return
    n_series, n_obs, period = 38, 47_000, 1440
    Y = fleet(n_series, n_obs, period, seed=1)
    print(f"\n{n_series} series x {n_obs} points, period {period} (batched only)")
    for robust in (False, True):
        t_b = median_time(lambda: stl(Y, period, robust=robust), args.reps)
        tracemalloc.start()
        stl(Y, period, robust=robust)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        label = "robust" if robust else "non-robust"
        print(f"{label:12s} {t_b:8.2f} s   peak traced memory {peak / 2**20:6.0f} MiB")


if __name__ == "__main__":
    main()
