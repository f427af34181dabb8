"""How far float results move between machines: the core under other BLAS and SIMD kernels.

Runs the real core (``core.fleet.detect_days``, as ``detector_quality.py`` runs it) on two
slices, in a subprocess per variant, each forcing what differs from one machine to another: the
OpenBLAS kernel (``OPENBLAS_CORETYPE``), one BLAS thread, numpy without AVX-512. The slices:

- ``smd``: the first two SMD machines, first 8 days (1-minute, 38 metrics: PCA evidence);
- ``industrial``: the embedded demo kind (hourly pumps, calendar components, faults).

For every float column of decomposition, scores and explanations it reports the worst difference
from this machine's default run, relative to the value and relative to the column's scale
(``max |want|``), which is what ``tests/tolerances.py`` bounds.

    .venv/bin/python benchmarks/float_tolerance.py            # all variants (a few minutes)
    .venv/bin/python benchmarks/float_tolerance.py --variant OPENBLAS_CORETYPE=Zen
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ["OPENBLAS_CORETYPE=Sandybridge", "OPENBLAS_CORETYPE=Nehalem", "OPENBLAS_CORETYPE=Prescott",
            "OPENBLAS_CORETYPE=SkylakeX", "OPENBLAS_CORETYPE=Zen", "OPENBLAS_NUM_THREADS=1",
            "NPY_DISABLE_CPU_FEATURES=X86_V4,AVX512_ICL"]
SMD_DAYS = 8


def measure(out: Path, slices=("smd", "industrial"), machines: int | list[str] = 2, days: int = SMD_DAYS) -> None:
    """Write every float column of the slices to ``out`` (.npz), keyed ``slice/table.column``.
    ``machines``: how many SMD machines (the first by name), or which."""
    import pandas as pd

    sys.path.insert(0, str(REPO / "benchmarks"))
    import detector_quality as dq

    from anomaly_assets.core.detector import DetectorParams

    arrays = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in slices:
            data = dq.load(name, Path(tmp))
            if name == "smd":
                keep = machines if isinstance(machines, list) else sorted(data.obs.entity_id.unique())[:machines]
                obs = data.obs[data.obs.entity_id.isin(keep)]
                data.obs = obs[obs.ts < obs.ts.min().floor("D") + pd.Timedelta(days=days)]
            for table, frame in dq.detect_frames(data, DetectorParams()).items():
                key_cols = [c for c in ("entity_id", "metric", "ts", "rank") if c in frame.columns]
                frame = frame.sort_values(key_cols).reset_index(drop=True)
                for c in frame.columns:
                    if pd.api.types.is_float_dtype(frame[c]):
                        arrays[f"{name}/{table}.{c}"] = frame[c].to_numpy(float)
    np.savez(out, **arrays)


def _run(variant: str, out: Path) -> dict:
    env = {**os.environ, **dict([variant.split("=", 1)] if variant else [])}
    subprocess.run([sys.executable, __file__, "--measure", str(out)], env=env, cwd=REPO, check=True)
    with np.load(out) as z:
        return {k: z[k] for k in z.files}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", action="append", help="NAME=VALUE environment (repeatable); default: all")
    p.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--smd-machine", action="append", help=argparse.SUPPRESS)  # --measure: SMD alone, these
    p.add_argument("--smd-days", type=int, default=SMD_DAYS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        if args.smd_machine:
            measure(args.measure, ("smd",), args.smd_machine, args.smd_days)
        else:
            measure(args.measure)
        return
    with tempfile.TemporaryDirectory() as tmp:
        want = _run("", Path(tmp) / "default.npz")
        worst = {c: (0.0, 0.0, "") for c in want}
        flips = {c: 0 for c in want}  # values NaN in one run only (a cut-off crossed by rounding)
        for variant in args.variant or VARIANTS:
            got = _run(variant, Path(tmp) / "variant.npz")
            for c, w in want.items():
                g = got[c]
                assert g.shape == w.shape, f"{variant}: {c} has {g.shape} values, default {w.shape}"
                flips[c] += int((np.isfinite(g) != np.isfinite(w)).sum())
                ok = np.isfinite(g) & np.isfinite(w)
                d = np.abs(g - w)[ok]
                scale = float(np.abs(w[ok]).max(initial=0))
                nonzero = np.abs(w[ok]) > 0  # relative to a value of 0 means nothing
                rel = float((d[nonzero] / np.abs(w[ok][nonzero])).max(initial=0))
                scaled = float(d.max(initial=0)) / scale if scale else 0.0
                if scaled >= worst[c][1]:
                    worst[c] = (max(rel, worst[c][0]), scaled, variant)
                else:
                    worst[c] = (max(rel, worst[c][0]), worst[c][1], worst[c][2])
    print(f"{'column':44s} {'worst rel. to value':>20s} {'worst rel. to column scale':>27s}  {'NaN flips':>9s}  variant")
    for c in sorted(worst):
        rel, scaled, variant = worst[c]
        print(f"{c:44s} {rel:20.2e} {scaled:27.2e}  {flips[c]:9d}  {variant}")
    print(f"\nworst difference relative to its column's scale: {max(w[1] for w in worst.values()):.2e} "
          f"(tests/tolerances.py allows 1e-9)")


if __name__ == "__main__":
    main()
