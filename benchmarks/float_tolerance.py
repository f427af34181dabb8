"""How far float results move between machines: the fleet-equivalence chain under other kernels.

Runs the chain of ``tests/core/test_fleet_equivalence.py`` (demo, SMD slice, irregular fleet;
float64) in a subprocess per variant, each forcing what differs from one machine to another: the
OpenBLAS kernel (``OPENBLAS_CORETYPE``), one BLAS thread, numpy without AVX-512. For every float
column it reports the worst difference from the recorded references, relative to the value and
relative to the column's scale (``max |want|``), which is what ``tests/tolerances.py`` bounds.

    .venv/bin/python benchmarks/float_tolerance.py            # all variants (a few minutes)
    .venv/bin/python benchmarks/float_tolerance.py --variant OPENBLAS_CORETYPE=Zen
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ["", "OPENBLAS_CORETYPE=Sandybridge", "OPENBLAS_CORETYPE=Nehalem", "OPENBLAS_CORETYPE=Prescott",
            "OPENBLAS_CORETYPE=SkylakeX", "OPENBLAS_CORETYPE=Zen", "OPENBLAS_NUM_THREADS=1",
            "NPY_DISABLE_CPU_FEATURES=X86_V4,AVX512_ICL"]


def measure() -> dict:
    """Per float column: [worst |diff|, worst relative diff, column scale]."""
    import numpy as np
    import pandas as pd

    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "tests" / "core"))
    import test_fleet_equivalence as eq

    from anomaly_assets.core import fleet

    fleet.CODE_VERSION = eq.REFERENCE_CODE_VERSION
    chunk = fleet.CHUNK_ENTITIES
    out = {}
    for case in sorted(eq.CASES):
        make, a, b, dp, mp = eq.CASES[case]
        if case == "smd" and not eq.SMD.exists():
            continue
        fleet.CHUNK_ENTITIES = 4 if case == "irregular" else chunk  # as the test does
        for name, got in eq.run_chain(make(), a, b, dp, mp).items():
            want = pd.read_parquet(eq.REF / f"{case}_{name}.parquet")
            got = got.reset_index(drop=True)
            for c in want.columns:
                if not pd.api.types.is_float_dtype(want[c]):
                    continue
                g, w = got[c].to_numpy(float), want[c].to_numpy(float)
                ok = np.isfinite(g) & np.isfinite(w)
                d = np.abs(g - w)[ok]
                rel = d / np.maximum(np.abs(w[ok]), np.finfo(float).tiny)
                out[f"{case}/{name}.{c}"] = [float(d.max(initial=0)), float(rel.max(initial=0)),
                                             float(np.abs(w[ok]).max(initial=0))]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", action="append", help="NAME=VALUE environment (repeatable); default: all")
    p.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        print(json.dumps(measure()))
        return
    results = {}
    for variant in args.variant or VARIANTS:
        env = {**os.environ, **dict([variant.split("=", 1)] if variant else [])}
        done = subprocess.run([sys.executable, __file__, "--measure"], env=env, capture_output=True, text=True,
                              cwd=REPO, check=True)
        results[variant or "(this machine)"] = json.loads(done.stdout.strip().splitlines()[-1])
    columns = sorted(next(iter(results.values())))
    print(f"{'column':44s} {'worst rel. to value':>20s} {'worst rel. to column scale':>27s}  variant")
    worst_scaled = 0.0
    for c in columns:
        rel = max((r[c][1], v) for v, r in results.items())
        scaled = max((r[c][0] / r[c][2] if r[c][2] else 0.0, v) for v, r in results.items())
        worst_scaled = max(worst_scaled, scaled[0])
        print(f"{c:44s} {rel[0]:20.2e} {scaled[0]:27.2e}  {scaled[1]}")
    print(f"\nworst difference relative to its column's scale: {worst_scaled:.2e} "
          f"(tests/tolerances.py allows 1e-9)")


if __name__ == "__main__":
    main()
